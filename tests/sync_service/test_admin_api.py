"""/v1/admin over HTTP (scope admin): fleets, channels, tokens."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient


@pytest.fixture
def admin(make_token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token('publisher', scopes=('admin',))}"}


def test_fleets_and_channels(client: TestClient, admin: dict[str, str]) -> None:
    r = client.post("/v1/admin/fleets", json={"name": "field"}, headers=admin)
    assert r.status_code == 201 and r.json()["channels"] == ["stable"]
    again = client.post("/v1/admin/fleets", json={"name": "field"}, headers=admin)
    assert again.status_code == 409 and again.json()["code"] == "fleet_exists"
    r = client.post("/v1/admin/fleets/field/channels", json={"name": "beta"}, headers=admin)
    assert r.status_code == 201 and r.json()["channels"] == ["beta", "stable"]
    assert (
        client.post("/v1/admin/fleets/field/channels", json={"name": "beta"}, headers=admin).status_code
        == 409
    )
    assert (
        client.post("/v1/admin/fleets/nope/channels", json={"name": "beta"}, headers=admin).status_code == 404
    )
    assert [f["name"] for f in client.get("/v1/admin/fleets", headers=admin).json()] == ["field"]


@pytest.mark.parametrize("body", [{"name": "Bad Name"}, {"name": ""}, {"name": "x" * 65}, {}, [1, 2]])
def test_bad_names_and_garbage_are_422(client: TestClient, admin: dict[str, str], body: object) -> None:
    r = client.post("/v1/admin/fleets", json=body, headers=admin)
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    assert client.get("/v1/admin/fleets", headers=admin).json() == []


def test_garbage_json_is_422(client: TestClient, admin: dict[str, str]) -> None:
    r = client.post(
        "/v1/admin/fleets", content=b'{"name": "fie', headers={**admin, "Content-Type": "application/json"}
    )
    assert r.status_code == 422 and set(r.json()) == {"detail", "code"}


def test_tokens_created_once_listed_without_secret_and_revoked(
    client: TestClient, admin: dict[str, str], fleet: str
) -> None:
    r = client.post(
        "/v1/admin/tokens", json={"kind": "publisher", "scopes": ["release", "publish"]}, headers=admin
    )
    assert r.status_code == 201
    created = r.json()
    assert created["token"].startswith("msp_") and created["scopes"] == ["publish", "release"]
    enroll = client.post(
        "/v1/admin/tokens", json={"kind": "enrollment", "fleet": fleet}, headers=admin
    ).json()
    assert enroll["token"].startswith("mse_") and enroll["fleet"] == fleet
    listed = client.get("/v1/admin/tokens", headers=admin).json()
    assert created["id"] in {t["id"] for t in listed}
    assert all("token" not in t for t in listed)
    new = {"Authorization": f"Bearer {created['token']}"}
    assert client.get("/v1/models", headers=new).status_code == 200
    revoked = client.post(f"/v1/admin/tokens/{created['id']}/revoke", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked"] is not None
    assert client.get("/v1/models", headers=new).status_code == 401
    assert client.post("/v1/admin/tokens/999/revoke", headers=admin).status_code == 404


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"kind": "publisher"}, 422),
        ({"kind": "publisher", "scopes": ["root"]}, 422),
        ({"kind": "publisher", "scopes": ["publish"], "fleet": "field"}, 422),
        ({"kind": "enrollment"}, 422),
        ({"kind": "enrollment", "fleet": "field", "scopes": ["publish"]}, 422),
        ({"kind": "enrollment", "fleet": "nope"}, 404),
        ({"kind": "device", "fleet": "field"}, 422),
    ],
)
def test_bad_token_requests(
    client: TestClient, admin: dict[str, str], fleet: str, body: dict[str, object], status: int
) -> None:
    before = client.get("/v1/admin/tokens", headers=admin).json()
    r = client.post("/v1/admin/tokens", json=body, headers=admin)
    assert r.status_code == status
    assert client.get("/v1/admin/tokens", headers=admin).json() == before


def test_admin_scope_is_required(client: TestClient, make_token: Callable[..., str]) -> None:
    publisher = {"Authorization": f"Bearer {make_token('publisher', scopes=('publish', 'release'))}"}
    r = client.post("/v1/admin/fleets", json={"name": "field"}, headers=publisher)
    assert r.status_code == 403 and r.json()["code"] == "missing_scope"
    assert client.get("/v1/admin/tokens").status_code == 401
