"""GET /v1/models and /v1/models/{name}/versions/{version}."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from tests.sync_service.bundle_factory import tar_dir


def test_models_and_versions(
    client: TestClient, auth: dict[str, str], bundle_factory: Callable[..., Path]
) -> None:
    assert client.get("/v1/models", headers=auth).json() == []
    for version, seed in ((1, 1), (3, 3)):
        r = client.post(
            "/v1/bundles",
            content=tar_dir(bundle_factory(version=version, seed=seed)),
            headers={**auth, "Content-Type": "application/x-tar"},
        )
        assert r.status_code == 201
    assert client.get("/v1/models", headers=auth).json() == [
        {"name": "demo", "versions": [1, 3], "latest": 3}
    ]
    r = client.get("/v1/models/demo/versions/3", headers=auth)
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == "demo" and body["version"] == 3
    assert body["created"].endswith("Z")
    assert [a["target"] for a in body["artifacts"]] == ["android-nnapi", "cpu"]
    assert all(a["precision"] == "fp32" and a["length"] > 0 for a in body["artifacts"])
    missing = client.get("/v1/models/demo/versions/2", headers=auth)
    assert missing.status_code == 404 and missing.json()["code"] == "model_version_not_found"


def test_any_publisher_scope_may_read(client: TestClient, make_token: Callable[..., str]) -> None:
    token = make_token("publisher", scopes=("release",))
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code == 200
