"""What the app serves, listed where it can be read: every router and every ASGI layer.

Nothing here is discovered by name or imported "optionally": a router that fails to
import stops the service at start-up instead of silently answering 404 for its routes.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from sync_service.api.routes import (
    admin,
    blobs,
    bundles,
    channels,
    devices,
    health,
    inventory,
    metrics,
    models_api,
    releases,
    root,
)
from sync_service.index_fast_path import IndexFastPath
from sync_service.logging import RequestIdMiddleware
from sync_service.metrics import MetricsMiddleware

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(root.router)
api_router.include_router(bundles.router)
api_router.include_router(blobs.router)
api_router.include_router(models_api.router)
api_router.include_router(admin.router)
api_router.include_router(releases.router)
api_router.include_router(channels.router)
api_router.include_router(devices.router)
api_router.include_router(inventory.router)
api_router.include_router(metrics.router)


def add_middleware(app: FastAPI) -> None:
    """The service's ASGI layers, added innermost first (Starlette wraps each new one around
    the previous): request id and JSON access log outermost, so every log line of a request
    carries its id; then metrics; then the index check's fast path, which is therefore
    counted and logged like any route."""
    app.add_middleware(IndexFastPath, route=channels.index_route())
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)
