"""``GET /v1/channels/{channel}/index``: the hot path. Every device asks it on every check.

It answers from two small in-process caches without touching the database or a worker
thread in the common case:

- device tokens: hash → (fleet, device), held ``TOKEN_TTL`` seconds. Revocation reaches a
  replica within that time (at once on the replica that re-registers the device);
- the channel's newest index, held ``IndexCache.ttl`` seconds, then re-validated with one
  indexed query. A replica therefore serves a change made elsewhere within the TTL.

The body is the stored bytes as signed; the ETag their sha256, so every replica (and a
CDN) agree on it. Re-signing on near-expiry happens here (sync_service/index.py).

``IndexFastPath`` answers a request whose token and index are both cached before FastAPI's
router runs (routing and dependency solving cost more than the rest of the answer); every
other request (first sight of a token, a cache miss, any error) goes to the route below.
Both build the answer with ``answer_parts``, so they cannot differ.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from sync_service import crud
from sync_service.api.deps import bearer_token
from sync_service.auth import hash_token
from sync_service.errors import Forbidden, NotFound, Unauthorized
from sync_service.index import IndexCache, IndexSigner, StoredIndex, cache_for, serve_index

router = APIRouter(prefix="/v1/channels", tags=["devices"])

TOKEN_TTL = 1.0
CACHE_CONTROL = "private, no-cache"
INDEX_PATH = re.compile(r"^/v1/channels/([A-Za-z0-9][A-Za-z0-9._-]{0,63})/index$")
MISSED = "modelsync_index_cache_missed"  # request state key: which cache the fast path missed


@dataclass(frozen=True)
class DeviceToken:
    kind: str
    fleet_id: int | None
    device_id: str | None


class TokenCache:
    def __init__(self, ttl: float = TOKEN_TTL) -> None:
        self.ttl = ttl
        self._items: dict[str, tuple[DeviceToken, float]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> DeviceToken | None:
        """The cached token; after the TTL the first caller gets ``None`` and re-reads the
        database while the others keep the cached answer (no stampede)."""
        item = self._items.get(digest)
        if item is None:
            return None
        now = time.monotonic()
        if now - item[1] > self.ttl:
            with self._lock:
                if self._items.get(digest) is item:
                    self._items[digest] = (item[0], now)
                    return None
        return item[0]

    def put(self, digest: str, token: DeviceToken) -> None:
        with self._lock:
            if len(self._items) > 100_000:  # bound memory under a flood of distinct tokens
                self._items.clear()
            self._items[digest] = (token, time.monotonic())

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


def _load_token(engine: Any, plain: str) -> DeviceToken | None:
    with Session(engine) as session:
        row = crud.get_token(session=session, plain=plain)
        return None if row is None else DeviceToken(row.kind, row.fleet_id, row.device_id)


def _load_index(
    engine: Any, cache: IndexCache, fleet_id: int, channel: str, signer: IndexSigner
) -> StoredIndex | None:
    with Session(engine) as session:
        return serve_index(session, cache, fleet_id=fleet_id, channel=channel, signer=signer)


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


def answer_parts(stored: StoredIndex, if_none_match: str | None) -> tuple[int, dict[str, str], bytes]:
    headers = {"ETag": stored.etag, "Cache-Control": CACHE_CONTROL}
    if if_none_match is not None and etag_matches(if_none_match, stored.etag):
        return 304, headers, b""
    return 200, headers, stored.body


@router.get(
    "/{channel}/index",
    response_class=Response,
    responses={
        200: {"content": {"application/json": {}}, "description": "the signed channel-index envelope"},
        304: {"description": "If-None-Match matched the current ETag; no body"},
        401: {"description": "missing, unknown or revoked token"},
        403: {"description": "not a device token"},
        404: {"description": "the token's fleet has no such channel"},
    },
)
async def get_channel_index(
    channel: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")],
    request: Request,
) -> Response:
    state = request.app.state
    missed = request.scope.get("state", {}).get(MISSED)  # set by IndexFastPath
    plain = bearer_token(request)
    digest = hash_token(plain)
    tokens = token_cache_for(state)
    token = None if missed == "token" else tokens.get(digest)
    if token is None:
        token = await run_in_threadpool(_load_token, state.engine, plain)
        if token is None:
            tokens.forget(digest)  # revoked since it was cached: nobody is served from it now
            raise Unauthorized("unknown or revoked token", code="invalid_token")
        tokens.put(digest, token)
    if token.kind != "device" or token.fleet_id is None:
        raise Forbidden("a device token is needed", code="wrong_token_kind")

    cache = cache_for(state)
    signer = IndexSigner(keys=(state.keys.index_key,), lifetime=state.settings.index_lifetime)
    hit = None if missed is not None else cache.get(token.fleet_id, channel, signer.lifetime)
    stored = hit[1] if hit is not None else None
    if stored is None:
        stored = await run_in_threadpool(_load_index, state.engine, cache, token.fleet_id, channel, signer)
    if stored is None:
        raise NotFound(f"no channel {channel!r} in this device's fleet", code="unknown_channel")

    status, headers, body = answer_parts(stored, request.headers.get("if-none-match"))
    if status == 304:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)




class IndexFastPath:
    """Pure ASGI: serve the index check from the caches, or hand the request on unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._route: Any = None

    def _index_route(self) -> Any:
        # The metrics middleware labels requests by scope["route"]: give it the real route.
        if self._route is None:
            found = (r for r in router.routes if getattr(r, "endpoint", None) is get_channel_index)
            self._route = next(found, False)
        return self._route or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            match = INDEX_PATH.match(scope["path"])
            answer = self._cached_answer(scope, match.group(1)) if match else None
            if answer is not None:
                status, headers, body = answer
                route = self._index_route()
                if route is not None:
                    scope["route"] = route
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
        token = token_cache_for(state).get(hash_token(plain.strip()))
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
        return answer_parts(hit[1], if_none_match)
