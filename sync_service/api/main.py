"""What the app serves, listed where it can be read: every router and every ASGI layer.

Nothing here is discovered by name or imported "optionally": a router that fails to
import stops the service at start-up instead of silently answering 404 for its routes.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from sync_service.api.body_cap import BodyCap
from sync_service.api.routes import (
    admin,
    audit,
    blobs,
    bundles,
    channels,
    devices,
    health,
    inventory,
    metrics,
    models_api,
    packs,
    releases,
    root,
)
from sync_service.index_fast_path import IndexFastPath
from sync_service.logging import RequestIdMiddleware
from sync_service.metrics import MetricsMiddleware

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    root.router,
    bundles.router,
    blobs.router,
    models_api.router,
    admin.router,
    releases.router,
    audit.router,
    packs.router,
    channels.router,
    devices.router,
    inventory.router,
    metrics.router,
)
api_router = APIRouter()
for _router in ROUTERS:
    api_router.include_router(_router)


def api_routes() -> list[APIRoute]:
    """Every operation served, with its full path (each router's prefix is in its routes'),
    for the OpenAPI schema's error statuses (sync_service/api/openapi.py)."""
    return [r for router in ROUTERS for r in router.routes if isinstance(r, APIRoute)]


def add_middleware(app: FastAPI) -> None:
    """The service's ASGI layers, added innermost first (Starlette wraps each new one around
    the previous): request id and JSON access log outermost, so every log line of a request
    carries its id; then metrics; then the index check's fast path, which is therefore
    counted and logged like any route; then the request body cap."""
    app.add_middleware(BodyCap)  # innermost: its 413s are counted and logged like any answer
    app.add_middleware(IndexFastPath, route=channels.index_route())
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)
