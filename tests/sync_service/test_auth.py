"""Tokens and how the API treats each kind."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from sync_service.auth import hash_token, kind_of, new_token, parse_scopes


@pytest.mark.parametrize(
    ("kind", "prefix"), [("publisher", "msp_"), ("enrollment", "mse_"), ("device", "msd_")]
)
def test_new_token_is_random_prefixed_and_hashed(kind: str, prefix: str) -> None:
    token, digest = new_token(kind)  # type: ignore[arg-type]
    other, _ = new_token(kind)  # type: ignore[arg-type]
    assert token.startswith(prefix) and token != other
    assert len(token) >= len(prefix) + 43  # 32 random bytes, url-safe base64
    assert digest == hash_token(token) and len(digest) == 64
    assert kind_of(token) == kind


def test_parse_scopes() -> None:
    assert parse_scopes("release, publish,publish") == ["publish", "release"]
    with pytest.raises(ValueError, match="unknown scope 'delete'"):
        parse_scopes("publish,delete")


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_token"),
        ("Basic dXNlcjpwYXNz", "bad_auth_header"),
        ("Bearer ", "bad_auth_header"),
        ("Bearer msp_not-a-real-token", "invalid_token"),
    ],
)
def test_bad_credentials_are_401(client: TestClient, header: str | None, code: str) -> None:
    headers = {"Authorization": header} if header is not None else {}
    r = client.get("/v1/models", headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["code"] == code
    assert set(r.json()) == {"detail", "code"}


def test_device_and_enrollment_tokens_cannot_use_publisher_routes(
    client: TestClient, make_token: Callable[..., str], fleet: str, enrollment_token: str
) -> None:
    device = make_token("device", fleet=fleet, device_id="d1")
    for token in (device, enrollment_token):
        r = client.get("/v1/models", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 403 and r.json()["code"] == "wrong_token_kind"


def test_unknown_route_and_method_use_the_error_body(client: TestClient) -> None:
    r = client.get("/v1/nothing-here")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found", "code": "not_found"}
    r = client.delete("/healthz")
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"
