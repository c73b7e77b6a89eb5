"""The index check's ``X-Accel-Expires``: a reverse proxy may keep an answer only until
the service's own token cache re-reads that token (``token_deadline``), never longer."""

from __future__ import annotations

import math
import time

from fastapi.testclient import TestClient

from sync_service.index_fast_path import TOKEN_TTL, DeviceToken, TokenCache, proxy_expiry, token_deadline
from tests.sync_service.fleet_helpers import get_index, register


def _expires(value: str) -> int:
    assert value.startswith("@"), value
    return int(value[1:])


def test_every_index_answer_bounds_a_proxys_cache(client: TestClient, enrollment_token: str) -> None:
    token = register(client, enrollment_token, "dev-proxy")
    for _ in range(5):  # the route's first answer, then the fast path's
        r = get_index(client, token)
        after = time.time()
        assert r.status_code == 200
        # nginx keeps an entry while the whole second <= the value: gone at value + 1, which
        # is no later than TTL after the token's read (and that read was before `after`).
        assert _expires(r.headers["x-accel-expires"]) + 1 <= math.floor(after + TOKEN_TTL)
        etag = r.headers["etag"]
        r304 = client.get("/v1/channels/stable/index",
                          headers={"Authorization": f"Bearer {token}", "If-None-Match": etag})
        assert r304.status_code == 304 and "x-accel-expires" in r304.headers
    r = client.get("/v1/channels/stable/index", headers={"Authorization": "Bearer msd_unknown"})
    assert r.status_code == 401 and "x-accel-expires" not in r.headers


def test_deadline_is_a_whole_second_at_most_the_ttl_after_the_read() -> None:
    for checked_at in (1000.0, 1000.3, 1000.999):
        token = DeviceToken("device", 1, "d", checked_at)
        deadline = token_deadline(token, TOKEN_TTL)
        assert deadline == 1001 and checked_at < deadline <= checked_at + TOKEN_TTL
        assert proxy_expiry(token, TOKEN_TTL) == "@1000"
    assert proxy_expiry(DeviceToken("device", 1, "d"), TOKEN_TTL) == "@0"  # never read: not kept


def test_token_cache_rereads_at_the_deadline() -> None:
    cache = TokenCache()
    stale = DeviceToken("device", 1, "d", time.time() - 5)  # read long ago: due at once
    cache.put("h", stale)
    assert cache.get("h") is None  # this caller re-reads...
    assert cache.get("h") == stale  # ...while the others keep the cached answer
    fresh = DeviceToken("device", 1, "d", time.time())
    cache.put("h", fresh)
    assert cache.get("h") == fresh
