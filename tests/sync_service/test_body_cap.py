"""Request bodies are capped before they are buffered (sync_service/api/body_cap.py): FastAPI
reads a JSON route's whole body before any token check, so a body of any size from anyone
was held in memory (200 MiB to /v1/devices/register: +200 MiB, then a 401). Over the cap:
413 ``payload_too_large``, documented, whether the length is declared or the body streams."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from sync_service.api.body_cap import BODY_MAX
from tests.sync_service.fleet_helpers import bearer, event, register

JSON_ROUTES = [
    ("POST", "/v1/devices/register"),
    ("POST", "/v1/devices/d1/reports"),
    ("POST", "/v1/releases"),
    ("PATCH", "/v1/releases/1"),
    ("POST", "/v1/admin/fleets"),
    ("POST", "/v1/admin/tokens"),
]


def _pieces(total: int, piece: int = 256 * 1024) -> Iterator[bytes]:
    yield b'{"name": "'
    for _ in range(total // piece):
        yield b"a" * piece
    yield b'"}'


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
def test_over_the_cap_is_413_before_any_token_check(client: TestClient, method: str, path: str) -> None:
    declared = client.request(
        method, path, content=b"{" + b" " * BODY_MAX + b"}", headers={"Content-Type": "application/json"}
    )
    assert declared.status_code == 413, declared.text
    assert declared.json()["code"] == "payload_too_large"
    streamed = client.request(  # no Content-Length: chunked, counted while read
        method, path, content=_pieces(BODY_MAX + 1024 * 1024), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413, streamed.text
    assert streamed.json()["code"] == "payload_too_large"
    schema = client.get("/openapi.json").json()
    template = path.replace("/d1/", "/{device_id}/").replace("/1", "/{release_id}")
    assert "413" in schema["paths"][template][method.lower()]["responses"]


def test_a_full_report_batch_fits(client: TestClient, enrollment_token: str) -> None:
    token = register(client, enrollment_token, "d1")
    events = [
        {**event("inference_stats"), "data": {"rows": 10_000, "p99_ms": 1.5, "note": "x" * 500}}
        for _ in range(500)
    ]
    r = client.post("/v1/devices/d1/reports", json={"events": events}, headers=bearer(token))
    assert r.status_code == 200, r.text[:300]
    assert r.json()["accepted"] == 500
