from __future__ import annotations

import httpx
from fastapi.testclient import TestClient

from sync_service.storage.local import LocalStorage


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_ready(client: TestClient) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200, r.text


def test_readyz_storage_gone_is_503(client: TestClient) -> None:
    storage = client.app.state.storage  # type: ignore[attr-defined]
    assert isinstance(storage, LocalStorage)
    storage.root.rmdir()
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["code"] == "storage_unavailable"


def test_live_server_answers_over_loopback(live_server: str) -> None:
    r = httpx.get(f"{live_server}/healthz")
    assert r.status_code == 200


def test_root_chain(client: TestClient, server_keys: object) -> None:
    r = client.get("/v1/root/1.json")
    assert r.status_code == 200
    assert r.json()["signed"]["version"] == 1
    missing = client.get("/v1/root/2.json")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no root version 2", "code": "root_not_found"}
