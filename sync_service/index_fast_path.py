"""The index check's hot path, beside the index cache it reads (sync_service/index.py).

Every device asks ``GET /v1/channels/{channel}/index`` on every check. Two small
in-process caches answer it without touching the database or a worker thread in the
common case:

- device tokens: hash → (fleet, device), held ``TOKEN_TTL`` seconds. Revocation reaches a
  replica within that time (at once on the replica that re-registers the device);
- the channel's newest index (``IndexCache``), held its TTL, then re-validated with one
  indexed query. A replica therefore serves a change made elsewhere within the TTL.

A cached token is due again at ``token_deadline``: its database read plus ``TOKEN_TTL``,
rounded down to a whole wall-clock second. Every answer says how long a reverse proxy may
keep it (``X-Accel-Expires``, read by nginx and hidden from clients; deploy/nginx/): until
that same deadline, so a proxy's cache never serves a revoked token longer than the
service itself would, and both re-check at the same instant (docs/deploy.md).

``IndexFastPath`` answers a request whose token and index are both cached before FastAPI's
router runs (routing and dependency solving cost more than the rest of the answer); every
other request (first sight of a token, a cache miss, any error) goes on to the route
(sync_service/api/routes/channels.py). Both build the answer with ``answer_parts``, so
they cannot differ.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from sync_service.auth import TokenKind, hash_token
from sync_service.index import StoredIndex, cache_for

TOKEN_TTL = 1.0
CACHE_CONTROL = "private, no-cache"
INDEX_PATH = re.compile(r"^/v1/channels/([A-Za-z0-9][A-Za-z0-9._-]{0,63})/index$")
MISSED = "modelsync_index_cache_missed"  # request state key: which cache the fast path missed


@dataclass(frozen=True)
class DeviceToken:
    kind: TokenKind
    fleet_id: int | None
    device_id: str | None
    # wall-clock time of the database read this came from: the proxy's cache deadline
    checked_at: float = field(default=0.0, compare=False)


def token_deadline(token: DeviceToken, ttl: float) -> int:
    """The whole wall-clock second at which a token read from the database at
    ``checked_at`` must be read again: the service and a proxy's cache (``proxy_expiry``)
    drop it at the same instant, never later than ``ttl`` after the read."""
    return math.floor(token.checked_at + ttl)


class TokenCache:
    def __init__(self, ttl: float = TOKEN_TTL) -> None:
        self.ttl = ttl
        # digest -> (token, monotonic time after which the next caller re-reads it)
        self._items: dict[str, tuple[DeviceToken, float]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> DeviceToken | None:
        """The cached token; once it is due the first caller gets ``None`` and re-reads the
        database while the others keep the cached answer (no stampede)."""
        item = self._items.get(digest)
        if item is None:
            return None
        now = time.monotonic()
        if now > item[1]:
            with self._lock:
                if self._items.get(digest) is item:
                    self._items[digest] = (item[0], now + self.ttl)
                    return None
        return item[0]

    def put(self, digest: str, token: DeviceToken) -> None:
        # Due at the token's deadline (a whole second, so a proxy can share it) or after
        # the TTL, whichever is first; monotonic, so a wall-clock jump cannot stretch it.
        left = min(self.ttl, token_deadline(token, self.ttl) - time.time())
        with self._lock:
            if len(self._items) > 100_000:  # bound memory under a flood of distinct tokens
                self._items.clear()
            self._items[digest] = (token, time.monotonic() + max(0.0, left))

    def forget(self, digest: str) -> None:
        with self._lock:
            self._items.pop(digest, None)

    def forget_device(self, device_id: str) -> None:
        with self._lock:
            for key in [k for k, v in self._items.items() if v[0].device_id == device_id]:
                del self._items[key]


_TOKENS_LOCK = threading.Lock()


def token_cache_for(state: Any) -> TokenCache:
    cache: TokenCache | None = getattr(state, "device_token_cache", None)
    if cache is None:
        with _TOKENS_LOCK:
            cache = getattr(state, "device_token_cache", None)
            if cache is None:
                cache = TokenCache()
                state.device_token_cache = cache
    return cache


def etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 weak comparison over a list of entity tags (``*`` matches anything)."""
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False


def proxy_expiry(token: DeviceToken, ttl: float) -> str:
    """nginx keeps an entry while the clock's whole second is <= the value given: one less
    than the token's deadline ends it at the deadline (``@0``: not kept)."""
    return f"@{max(0, token_deadline(token, ttl) - 1)}"


def answer_parts(
    stored: StoredIndex, if_none_match: str | None, proxy_expires: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"ETag": stored.etag, "Cache-Control": CACHE_CONTROL}
    if proxy_expires is not None:
        headers["X-Accel-Expires"] = proxy_expires
    if if_none_match is not None and etag_matches(if_none_match, stored.etag):
        return 304, headers, b""
    return 200, headers, stored.body


class IndexFastPath:
    """Pure ASGI: serve the index check from the caches, or hand the request on unchanged."""

    def __init__(self, app: ASGIApp, route: BaseRoute | None = None) -> None:
        """``route``: the index route, put in ``scope["route"]`` of every answer given here,
        as the router would have (the metrics middleware labels requests by it)."""
        self.app = app
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            match = INDEX_PATH.match(scope["path"])
            answer = self._cached_answer(scope, match.group(1)) if match else None
            if answer is not None:
                status, headers, body = answer
                if self.route is not None:
                    scope["route"] = self.route
                raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
                if status == 200:
                    raw.append((b"content-length", str(len(body)).encode()))
                    raw.append((b"content-type", b"application/json"))
                await send({"type": "http.response.start", "status": status, "headers": raw})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _cached_answer(scope: Scope, channel: str) -> tuple[int, dict[str, str], bytes] | None:
        app = scope.get("app")
        state = getattr(app, "state", None)
        if state is None:
            return None
        authorization = if_none_match = None
        for name, value in scope.get("headers", []):  # the first of each, like Request.headers
            if name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
            elif name == b"if-none-match" and if_none_match is None:
                if_none_match = value.decode("latin-1")
        if authorization is None:
            return None
        scheme, _, plain = authorization.partition(" ")
        if scheme.lower() != "bearer" or not plain.strip():
            return None
        tokens = token_cache_for(state)
        token = tokens.get(hash_token(plain.strip()))
        if token is None:
            # A cache get may have claimed the re-validation: the route must not ask again.
            scope.setdefault("state", {})[MISSED] = "token"
            return None
        if token.kind != "device" or token.fleet_id is None:
            return None
        hit = cache_for(state).get(token.fleet_id, channel, state.settings.index_lifetime)
        if hit is None:
            scope.setdefault("state", {})[MISSED] = "index"
            return None
        return answer_parts(hit[1], if_none_match, proxy_expiry(token, tokens.ttl))
