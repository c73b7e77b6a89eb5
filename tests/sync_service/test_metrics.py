"""/metrics (Prometheus text), bytes by kind, the 304 ratio, request ids and JSON logs."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from sync_service import logging as service_logging
from sync_service import metrics
from tests.sync_service.fleet_helpers import bearer, get_index, register

INDEX = "/v1/channels/{channel}/index"


def _samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_index_requests_bytes_and_304_ratio(client: TestClient, fleet: str, enrollment_token: str) -> None:
    token = register(client, enrollment_token, "dev-1")
    before = _samples(client)
    full = get_index(client, token)
    for _ in range(3):
        r = client.get(
            "/v1/channels/stable/index", headers={**bearer(token), "If-None-Match": full.headers["etag"]}
        )
        assert r.status_code == 304
    after = _samples(client)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("modelsync_http_requests_total", route=INDEX, method="GET", status="304") == 3
    assert delta("modelsync_http_requests_total", route=INDEX, method="GET", status="200") == 1
    assert delta("modelsync_index_responses_total", status="304") == 3
    assert delta("modelsync_bytes_served_total", kind="index") == len(full.content)
    assert delta("modelsync_http_request_duration_seconds_count", route=INDEX, method="GET") == 4
    ratio = after[("modelsync_index_not_modified_ratio", ())]
    ok = metrics.INDEX_RESPONSES.labels("200")._value.get()
    nm = metrics.INDEX_RESPONSES.labels("304")._value.get()
    assert ratio == pytest.approx(nm / (ok + nm))


def test_unmatched_paths_share_one_label(client: TestClient) -> None:
    for i in range(3):
        assert client.get(f"/no/such/path/{i}").status_code == 404
    samples = _samples(client)
    routes = {
        dict(labels).get("route") for (name, labels) in samples if name == "modelsync_http_requests_total"
    }
    assert "unmatched" in routes
    assert not any(r and r.startswith("/no/such") for r in routes)


def test_request_id_echoed_or_made(client: TestClient) -> None:
    assert (
        client.get("/healthz", headers={"X-Request-ID": "lb-7f3a.42"}).headers["x-request-id"] == "lb-7f3a.42"
    )
    made = client.get("/healthz").headers["x-request-id"]
    assert len(made) == 32 and int(made, 16) >= 0
    injected = client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"}).headers["x-request-id"]
    assert injected != "bad id\twith spaces" and len(injected) == 32


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("uvicorn.access").disabled)
    stream = io.StringIO()
    service_logging.configure_logging("INFO", stream)
    try:
        yield stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("uvicorn.access").disabled = saved[2]


def test_json_access_log_carries_the_request_id(client: TestClient, json_log: io.StringIO) -> None:
    client.get("/healthz", headers={"X-Request-ID": "trace-123"})
    records = [json.loads(line) for line in json_log.getvalue().splitlines() if line.strip()]
    access = [r for r in records if r.get("logger") == "modelsync.access"]
    assert access, records
    rec = access[-1]
    assert (rec["request_id"], rec["method"], rec["path"], rec["status"]) == (
        "trace-123",
        "GET",
        "/healthz",
        200,
    )
    assert rec["level"] == "INFO" and rec["duration_ms"] >= 0


def test_log_records_inside_a_request_get_its_id(app: FastAPI, json_log: io.StringIO) -> None:
    """Route code runs in Starlette's threadpool: its records still carry the request id."""

    def noisy() -> dict[str, str]:
        logging.getLogger("modelsync.test").warning("inside the route")
        return {}

    app.add_api_route("/_test/noisy", noisy)
    with TestClient(app) as client:
        assert client.get("/_test/noisy", headers={"X-Request-ID": "thread-1"}).status_code == 200
    records = [json.loads(line) for line in json_log.getvalue().splitlines() if line.strip()]
    inside = [r for r in records if r.get("message") == "inside the route"]
    assert [r["request_id"] for r in inside] == ["thread-1"]


def test_304_polls_are_logged_at_debug_only(
    client: TestClient, fleet: str, enrollment_token: str, json_log: io.StringIO
) -> None:
    token = register(client, enrollment_token, "dev-1")
    etag = get_index(client, token).headers["etag"]
    client.get(
        "/v1/channels/stable/index", headers={**bearer(token), "If-None-Match": etag, "X-Request-ID": "poll"}
    )
    records = [json.loads(line) for line in json_log.getvalue().splitlines() if line.strip()]
    assert not [r for r in records if r.get("request_id") == "poll"]
    logging.getLogger().setLevel("DEBUG")
    client.get(
        "/v1/channels/stable/index", headers={**bearer(token), "If-None-Match": etag, "X-Request-ID": "poll2"}
    )
    records = [json.loads(line) for line in json_log.getvalue().splitlines() if line.strip()]
    assert [(r["status"], r["level"]) for r in records if r.get("request_id") == "poll2"] == [(304, "DEBUG")]


def test_openapi_docs_list_the_release_device_and_index_routes(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/releases",
        "/v1/releases/{release_id}/status",
        "/v1/releases/{release_id}/adoption",
        "/v1/releases/{release_id}/behaviour",
        "/v1/audit",
        "/v1/devices/register",
        "/v1/devices/{device_id}/reports",
        "/v1/channels/{channel}/index",
        "/metrics",
    ):
        assert path in paths, path
