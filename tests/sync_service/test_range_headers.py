"""Range headers against the blob route: whatever the header, never a 5xx, and the answer
is one of RFC 9110's three (issue 8, item 2: very long numbers gave 500)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sync_service.fleet_helpers import bearer, register
from tests.sync_service.test_blobs import publish

LONG = "9" * 5000  # past int()'s 4,300-digit limit


@pytest.fixture
def blob(client: TestClient, auth: dict[str, str], bundle_factory: Callable[..., Path]) -> dict[str, Any]:
    body = publish(client, auth, bundle_factory(weights=300))
    sha = body["artifacts"][0]["sha256"]
    data = client.get(f"/v1/blobs/{sha}", headers={**auth, "Accept-Encoding": "identity"}).content
    return {"url": f"/v1/blobs/{sha}", "data": data}


def check_answer(r: Any, data: bytes) -> None:
    """One of: 200 with the whole blob (Range ignored), 206 with exactly the named bytes, or
    416 with ``Content-Range: bytes */<size>``."""
    size = len(data)
    assert r.status_code in (200, 206, 416), (r.status_code, r.text[:200])
    if r.status_code == 200:
        assert r.content == data
    elif r.status_code == 206:
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", r.headers["content-range"])
        assert m is not None, r.headers["content-range"]
        first, last, total = (int(g) for g in m.groups())
        assert total == size and 0 <= first <= last < size
        assert int(r.headers["content-length"]) == last - first + 1
        assert r.content == data[first : last + 1]
    else:
        assert r.headers["content-range"] == f"bytes */{size}"
        assert r.json()["code"] == "range_not_satisfiable"


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (f"bytes={LONG}-", 416),  # starts far beyond the end
        (f"bytes={LONG}-{LONG}", 416),
        (f"bytes=-{LONG}", 206),  # a suffix longer than the blob is the whole blob
        (f"bytes=0-{LONG}", 206),  # an end beyond the blob is clipped
        (f"bytes={'0' * 5000}1-{'0' * 5000}9", 206),  # leading zeros are still small numbers
        (f"bytes={LONG}-1", 200),  # last < first: an invalid range-spec, ignored
        (f"bytes={LONG}", 200),
    ],
)
def test_very_long_numbers(
    client: TestClient, auth: dict[str, str], blob: dict[str, Any], header: str, status: int
) -> None:
    r = client.get(blob["url"], headers={**auth, "Range": header})
    assert r.status_code == status, r.text[:200]
    check_answer(r, blob["data"])


DIGITS = st.text("0123456789", max_size=60) | st.sampled_from(["", "0", LONG, "0" * 4400 + "7"])
SPEC = st.builds(lambda a, b: f"{a}-{b}", DIGITS, DIGITS)
RANGE_HEADERS = st.one_of(
    st.builds(
        lambda unit, specs: f"{unit}={','.join(specs)}",
        st.sampled_from(["bytes", "BYTES", "items", ""]),
        st.lists(SPEC, min_size=1, max_size=3),
    ),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80),
    st.builds(
        lambda s: f"bytes={s}", st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
    ),
)


@given(header=RANGE_HEADERS)
@settings(
    max_examples=300,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_any_range_header_gets_a_well_formed_answer(
    client: TestClient, auth: dict[str, str], blob: dict[str, Any], header: str
) -> None:
    r = client.get(blob["url"], headers={**auth, "Range": header, "Accept-Encoding": "identity"})
    check_answer(r, blob["data"])


def test_very_long_content_length_is_413(client: TestClient, auth: dict[str, str]) -> None:
    r = client.post(
        "/v1/bundles",
        content=b"x" * 10,
        headers={**auth, "Content-Type": "application/x-tar", "Content-Length": LONG},
    )
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
    assert "5000-digit" in r.json()["detail"]


@pytest.mark.parametrize("declared", ["1_0", "+10", "0x10", "-1", " "])
def test_malformed_content_length_is_400(client: TestClient, auth: dict[str, str], declared: str) -> None:
    r = client.post(
        "/v1/bundles",
        content=b"x" * 10,
        headers={**auth, "Content-Type": "application/x-tar", "Content-Length": declared},
    )
    assert r.status_code == 400, r.text[:200]
    assert r.json()["code"] == "bad_content_length"


@pytest.mark.parametrize("value", [LONG, f'"{LONG}"', ", ".join(['W/"x"'] * 500), "\x7f", '"'])
def test_any_if_none_match_is_200_or_304(
    client: TestClient, auth: dict[str, str], blob: dict[str, Any], enrollment_token: str, value: str
) -> None:
    r = client.get(blob["url"], headers={**auth, "If-None-Match": value, "Accept-Encoding": "identity"})
    assert r.status_code == 200 and r.content == blob["data"]
    device = register(client, enrollment_token, "inm-1")
    index = client.get("/v1/channels/stable/index", headers={**bearer(device), "If-None-Match": value})
    assert index.status_code == 200, index.text[:200]
