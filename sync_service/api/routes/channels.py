"""``GET /v1/channels/{channel}/index``: the hot path. Every device asks it on every check.

This route answers what ``IndexFastPath`` (sync_service/index_fast_path.py) could not
answer from its caches: first sight of a token, a cache miss, any error. The body is the
stored bytes as signed; the ETag their sha256, so every replica (and a CDN) agree on it.
Re-signing on near-expiry happens here (sync_service/index.py).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute

from sync_service import crud
from sync_service.api.deps import bearer_token
from sync_service.api.openapi import refusals
from sync_service.auth import hash_token
from sync_service.errors import DatabaseUnavailable, Forbidden, Unauthorized, UnknownChannel
from sync_service.index import IndexCache, IndexSigner, StoredIndex, cache_for, serve_index
from sync_service.index_fast_path import MISSED, DeviceToken, answer_parts, proxy_expiry, token_cache_for

router = APIRouter(prefix="/v1/channels", tags=["devices"])


def _load_token(engine: Any, plain: str) -> DeviceToken | None:
    checked_at = time.time()  # before the read: a revocation after it is the next read's to see
    with Session(engine) as session:
        row = crud.get_token(session=session, plain=plain)
        return None if row is None else DeviceToken(row.kind, row.fleet_id, row.device_id, checked_at)


def _load_index(
    engine: Any, cache: IndexCache, fleet_id: int, channel: str, signer: IndexSigner
) -> StoredIndex | None:
    with Session(engine) as session:
        return serve_index(session, cache, fleet_id=fleet_id, channel=channel, signer=signer)


@router.get(
    "/{channel}/index",
    response_class=Response,
    responses={
        200: {"content": {"application/json": {}}, "description": "the signed channel-index envelope"},
        304: {"description": "If-None-Match matched the current ETag; no body"},
        **refusals(
            {
                Unauthorized: "missing, unknown or revoked token",
                Forbidden: "not a device token",
                UnknownChannel: "the token's fleet has no such channel",
                DatabaseUnavailable: "the database refused or dropped the connection: retry",
            }
        ),
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
        raise UnknownChannel(f"no channel {channel!r} in this device's fleet")

    status, headers, body = answer_parts(
        stored, request.headers.get("if-none-match"), proxy_expiry(token, tokens.ttl)
    )
    if status == 304:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)



def index_route() -> BaseRoute:
    """This route's object, for ``IndexFastPath`` to label the answers it gives instead."""
    return next(r for r in router.routes if getattr(r, "endpoint", None) is get_channel_index)
