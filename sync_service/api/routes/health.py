"""Liveness and readiness for load balancers and orchestrators. ``/readyz`` also carries
``warnings`` that need an operator but not a restart (a root about to expire)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from sync_service.api.deps import KeysDep, SessionDep, StorageDep
from sync_service.api.errors import error_response
from sync_service.api.openapi import refusals
from sync_service.errors import StorageError

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        **refusals({StorageError: "database or storage unreachable"}),
        200: {"description": "ready: {status, warnings: [{code, detail}]} (warnings do not fail it)"},
    },
)
def readyz(session: SessionDep, storage: StorageDep, keys: KeysDep) -> JSONResponse:
    try:
        session.exec(text("SELECT 1"))  # type: ignore[call-overload]
    except Exception as exc:
        return error_response(503, f"database unreachable: {type(exc).__name__}", "database_unavailable")
    try:
        storage.check()
    except StorageError as exc:
        return error_response(503, f"storage unreachable: {exc}", "storage_unavailable")
    return JSONResponse({"status": "ready", "warnings": keys.expiry_warnings()})
