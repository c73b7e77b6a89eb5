"""Header parsing that cannot raise (issue 8): whatever ``Range``, ``If-None-Match``,
``Authorization``, ``Content-Length``, ``Content-Encoding``, ``Accept-Encoding`` and
``X-Request-ID`` a request carries, on every route the service serves, the answer is never
a 5xx, and every error is a documented ``ErrorBody``. Generated header strings (hypothesis),
with a valid token of the right kind half the time so the parsing behind authentication is
reached too; test_range_headers.py checks the Range answers themselves."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sync_service.fleet_helpers import create_release, publish, register

LONG = "9" * 5000  # past int()'s 4,300-digit limit
# Header values HTTP can carry (RFC 9110 §5.5: visible ASCII, space, tab, obs-text).
VALUE_CHARS = st.characters(
    codec="latin-1", exclude_characters="\r\n\x00", exclude_categories=["Cc"]
) | st.sampled_from("\t")
ANY_VALUE = st.text(VALUE_CHARS, max_size=120)
DIGITS = st.text("0123456789", max_size=40) | st.sampled_from(["", "0", LONG, "0" * 4400 + "7", "-1"])
NUMBERISH = DIGITS | st.builds(
    lambda a, b: f"{a}{b}", DIGITS, st.sampled_from(["_0", " ", "+", "x", ".5", ",3"])
)

RANGE = st.one_of(
    ANY_VALUE,
    st.builds(lambda a, b: f"bytes={a}-{b}", DIGITS, DIGITS),
    st.builds(
        lambda unit, specs: f"{unit}={','.join(specs)}",
        st.sampled_from(["bytes", "BYTES", "items", "", " bytes"]),
        st.lists(st.builds(lambda a, b: f"{a}-{b}", DIGITS, DIGITS), min_size=1, max_size=3),
    ),
)
ETAG = st.builds(lambda weak, tag: f'{weak}"{tag}"', st.sampled_from(["", "W/", "w/"]), ANY_VALUE)
IF_NONE_MATCH = st.one_of(ANY_VALUE, st.just("*"), st.just(LONG), st.lists(ETAG, max_size=20).map(", ".join))
ENCODING = st.one_of(
    ANY_VALUE,
    st.lists(
        st.builds(
            lambda c, q: f"{c}{q}",
            st.sampled_from(["zstd", "gzip", "br", "identity", "*", "ZSTD", ""]),
            st.sampled_from(["", ";q=0", ";q=1", ";q=", ";q=abc", ";q=1e999", ";q=nan", f";q={LONG}"]),
        ),
        max_size=4,
    ).map(", ".join),
)


def _authorization(token: str) -> st.SearchStrategy[str]:
    return st.one_of(
        st.just(f"Bearer {token}"),
        st.just(f"bearer   {token}  "),
        ANY_VALUE,
        st.builds(
            lambda s, t: f"{s} {t}", st.sampled_from(["Bearer", "Basic", "bearer", "", "Token"]), ANY_VALUE
        ),
        st.just("Bearer " + "x" * 100_000),
        st.just("Bearer"),
    )


@pytest.fixture
def world(
    app: FastAPI,
    client: TestClient,
    auth: dict[str, str],
    fleet: str,
    enrollment_token: str,
    bundle_factory: Callable[..., Path],
) -> dict[str, Any]:
    v1 = publish(client, auth, bundle_factory(version=1, weights=300))
    v2 = publish(client, auth, bundle_factory(version=2, weights=300))
    release = create_release(client, auth, version=1, percent=100)
    device = register(client, enrollment_token, "fuzz-1")
    sha, sha2 = v1["artifacts"][0]["sha256"], v2["artifacts"][0]["sha256"]
    publisher = auth["Authorization"].removeprefix("Bearer ")
    tar = b"not a tar"
    routes: list[tuple[str, str, str, dict[str, Any]]] = [
        ("GET", "/healthz", publisher, {}),
        ("GET", "/readyz", publisher, {}),
        ("GET", "/metrics", publisher, {}),
        ("GET", "/v1/root/1.json", publisher, {}),
        (
            "POST",
            "/v1/bundles",
            publisher,
            {"content": tar, "headers": {"Content-Type": "application/x-tar"}},
        ),
        ("GET", f"/v1/blobs/{sha}", device, {}),
        ("GET", f"/v1/blobs/{sha}", publisher, {}),
        ("GET", f"/v1/blobs/{sha2}/delta?from={sha}", publisher, {}),
        ("GET", "/v1/models", publisher, {}),
        ("GET", "/v1/models/demo/versions/1", publisher, {}),
        ("GET", "/v1/models/demo/versions/1/parity", publisher, {}),  # 409: the tiny model has no label
        ("GET", "/v1/admin/fleets", publisher, {}),
        ("POST", "/v1/admin/fleets", publisher, {"json": {"name": "f2"}}),
        ("POST", "/v1/admin/fleets/field/channels", publisher, {"json": {"name": "beta"}}),
        ("GET", "/v1/admin/tokens", publisher, {}),
        ("POST", "/v1/admin/tokens", publisher, {"json": {"kind": "enrollment", "fleet": "field"}}),
        ("POST", "/v1/admin/tokens/999/revoke", publisher, {}),
        ("GET", "/v1/releases", publisher, {}),
        ("GET", f"/v1/releases/{release['id']}", publisher, {}),
        ("PATCH", f"/v1/releases/{release['id']}", publisher, {"json": {"percent": 100}}),
        ("GET", f"/v1/releases/{release['id']}/status", publisher, {}),
        ("GET", f"/v1/releases/{release['id']}/adoption?points=3", publisher, {}),
        ("GET", f"/v1/releases/{release['id']}/behaviour", publisher, {}),
        ("GET", "/v1/audit?limit=5", publisher, {}),
        ("POST", f"/v1/releases/{release['id']}/halt", publisher, {"json": {"reason": "fuzz"}}),
        ("POST", f"/v1/releases/{release['id']}/resume", publisher, {}),
        ("POST", f"/v1/releases/{release['id']}/promote", publisher, {"json": {}}),  # 409: not a shadow
        (
            "POST",
            "/v1/releases",
            publisher,
            {"json": {"fleet": "field", "channel": "stable", "model": "demo", "version": 2, "percent": 1}},
        ),
        ("GET", "/v1/channels/stable/index", device, {}),
        (
            "POST",
            "/v1/devices/register",
            enrollment_token,
            {"json": {"device_id": "fuzz-2", "platform": "linux"}},
        ),
        ("POST", "/v1/devices/fuzz-1/reports", device, {"json": {"events": []}}),
        ("GET", "/v1/fleets/field", publisher, {}),
        ("GET", "/v1/devices?fleet=field", publisher, {}),
        ("GET", "/v1/devices/fuzz-1", publisher, {}),
        ("GET", "/v1/devices/fuzz-1/history?limit=5", publisher, {}),
        ("POST", "/v1/devices/nobody/retire", publisher, {}),  # 404: fuzz-1 must keep its token
        ("POST", "/v1/fleets/field/channels/stable/pack", publisher, {"json": {"valid_days": 1}}),
    ]
    served = [(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops]
    for method, template in served:  # every route the schema lists is fuzzed
        pattern = re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)) + "$")
        assert any(m == method and pattern.match(p.split("?")[0]) for m, p, _, _ in routes), template
    return {"routes": routes}


HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "Range": RANGE,
        "If-None-Match": IF_NONE_MATCH,
        "Content-Length": NUMBERISH,
        "Content-Encoding": ENCODING,
        "Accept-Encoding": ENCODING,
        "X-Request-ID": ANY_VALUE | st.just("r" * 10_000),
    },
)


@given(data=st.data())
@settings(
    max_examples=400,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_header_gives_a_server_error(
    client: TestClient, world: dict[str, Any], data: st.DataObject
) -> None:
    method, path, token, extra = data.draw(st.sampled_from(world["routes"]), label="route")
    headers = {**extra.get("headers", {}), **data.draw(HEADERS, label="headers")}
    auth = data.draw(_authorization(token), label="authorization")
    headers["Authorization"] = auth
    body = {k: v for k, v in extra.items() if k != "headers"}
    if method == "GET":
        headers.pop("Content-Length", None)  # a GET with a declared body the client does not send
    # As bytes: obs-text (0x80-0xFF) is allowed on the wire, which httpx's str headers refuse.
    raw = {name: value.encode("latin-1") for name, value in headers.items()}
    r = client.request(method, path, headers=raw, **body)
    assert r.status_code < 500, (method, path, headers, r.status_code, r.text[:300])
    if r.status_code >= 400:
        body = r.json()  # the documented ErrorBody
        assert set(body) == {"detail", "code"} and all(isinstance(v, str) for v in body.values()), body


@pytest.mark.parametrize("form", ['"{sha}"', 'W/"{sha}"', '"other", "{sha}"', '*', ' "x" ,W/"{sha}" '])
def test_if_none_match_is_a_list_compared_weakly(
    client: TestClient, auth: dict[str, str], bundle_factory: Callable[..., Path], form: str
) -> None:
    """RFC 9110 §13.1.2: a list of entity tags, weak comparison (a CDN or a client may send
    several, or the weak form); the blob route matched only the exact single tag."""
    sha = publish(client, auth, bundle_factory())["artifacts"][0]["sha256"]
    r = client.get(f"/v1/blobs/{sha}", headers={**auth, "If-None-Match": form.format(sha=sha)})
    assert r.status_code == 304, r.text[:200]
    assert client.get(f"/v1/blobs/{sha}", headers={**auth, "If-None-Match": '"other"'}).status_code == 200
