"""The root chain: devices walk /v1/root/N+1.json … until 404 (docs/architecture.md, check 1)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from sync_service.api.deps import KeysDep
from sync_service.api.openapi import refusals
from sync_service.errors import NotFound

router = APIRouter(prefix="/v1/root", tags=["devices"])


@router.get("/{version}.json", responses=refusals({NotFound: "no such root version"}))
def get_root_version(version: int, keys: KeysDep) -> Response:
    path = keys.root_file(version) if version >= 1 else None
    if path is None:
        raise NotFound(f"no root version {version}", code="root_not_found")
    # The exact bytes as signed and written by `modelsync keys`: never re-serialised.
    return Response(path.read_bytes(), media_type="application/json", headers={"Cache-Control": "no-cache"})
