"""/openapi.json tells the truth about errors (issue 8, item 7): every error answer is
documented with our ``ErrorBody`` (FastAPI's default validation error, ``detail`` as a list,
appears nowhere), and every operation behind a token lists 401 and 403. The schemathesis
run (test_schemathesis_cli.py) checks the answers against it; this checks the schema itself
and the answers that made it lie, fast."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from sync_service.api.openapi import ErrorBody

OPEN = {"/healthz", "/readyz", "/metrics", "/v1/root/{version}.json"}


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in schema["paths"].items() for method, op in ops.items()]


def test_every_error_is_an_error_body(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert schema["components"]["schemas"]["ErrorBody"]["required"] == ["detail", "code"]
    for path, method, op in _operations(schema):
        for status, answer in op["responses"].items():
            if int(status) >= 400:
                ref = answer["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/ErrorBody", (method, path, status)


def test_every_operation_lists_its_statuses(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    ops = {(method, path): set(op["responses"]) for path, method, op in _operations(schema)}
    for (method, path), statuses in ops.items():
        if path not in OPEN:
            assert {"401", "403"} <= statuses, (method, path, statuses)
        if "{" in path:
            assert "422" in statuses, (method, path)
    assert {"400", "413", "415", "409", "403"} <= ops[("post", "/v1/bundles")]
    assert {"404", "416", "503"} <= ops[("get", "/v1/blobs/{sha256}")]
    assert {"404", "409"} <= ops[("patch", "/v1/releases/{release_id}")]
    assert "409" not in ops[("get", "/v1/releases/{release_id}")]  # a read conflicts with nothing
    # A token is needed where 401 is answered, and the schema says which kind.
    assert schema["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}


def test_undecodable_json_body_is_a_documented_400(client: TestClient, auth: dict[str, str]) -> None:
    r = client.post(
        "/v1/admin/fleets", content=b"\x12i\xff\x1d", headers={**auth, "Content-Type": "application/json"}
    )
    assert r.status_code in (400, 422), r.text
    ErrorBody.model_validate(r.json())


def test_405_allows_every_method_of_the_path(client: TestClient, auth: dict[str, str]) -> None:
    r = client.request("OPTIONS", "/v1/releases/1", headers=auth)
    assert r.status_code == 405
    assert set(r.headers["allow"].split(", ")) >= {"GET", "PATCH"}
    assert r.json()["code"] == "method_not_allowed"


def test_statuses_come_from_dependencies(app: FastAPI) -> None:
    from sync_service.api.main import api_routes
    from sync_service.api.openapi import statuses_of

    by_path = {(r.path, tuple(sorted(r.methods))): statuses_of(r) for r in api_routes()}
    assert by_path[("/v1/models", ("GET",))] == {401, 403, 503}  # 503: the database
    assert by_path[("/healthz", ("GET",))] == set()
    assert {401, 403, 422, 400} <= by_path[("/v1/releases", ("POST",))]


def test_schema_valid_reports_are_accepted(client: TestClient, enrollment_token: str) -> None:
    """What schemathesis' positive_data_acceptance found: a report the schema allows was
    refused with 422 (a 1.0 version, a date-time whose UTC moment is before year 1)."""
    from tests.sync_service.fleet_helpers import bearer, event, register

    token = register(client, enrollment_token, "d-ok")
    events = [
        {**event("installed"), "version": 1.0},
        {**event("installed"), "at": "0001-01-01T00:00:00+23:58"},
        {**event("installed"), "at": "9999-12-31T23:59:59-23:58"},
    ]
    r = client.post("/v1/devices/d-ok/reports", json={"events": events}, headers=bearer(token))
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 3


def test_database_down_is_a_documented_503(app: FastAPI, client: TestClient, auth: dict[str, str]) -> None:
    """A database that refuses connections (or drops them, or is locked) is 503
    ``database_unavailable`` on every route that reads it, as the schema says; it was a
    text/plain 500 without our error body."""
    from sync_service.db import make_engine

    schema = client.get("/openapi.json").json()
    assert "503" in schema["paths"]["/v1/models"]["get"]["responses"]
    assert "503" in schema["paths"]["/v1/channels/{channel}/index"]["get"]["responses"]
    healthy = app.state.engine
    # Nothing listens on the discard port: every connection is refused.
    app.state.engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:9/secret_db")
    try:
        for path in ("/v1/models", "/v1/channels/stable/index", "/readyz"):
            r = client.get(path, headers=auth)
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert r.json()["code"] == "database_unavailable", r.text
            assert "nobody" not in r.text and "secret" not in r.text  # no driver message
    finally:
        app.state.engine.dispose()
        app.state.engine = healthy


def test_405_on_a_concrete_path_lists_its_own_methods(client: TestClient) -> None:
    """/v1/devices/register is its own operation, not /v1/devices/{device_id}: its 405 allows
    POST only, as the schema says (schemathesis ST205 found GET advertised there)."""
    r = client.request("OPTIONS", "/v1/devices/register")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert set(client.get("/openapi.json").json()["paths"]["/v1/devices/register"]) == {"post"}
