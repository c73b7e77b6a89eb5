"""``GET /metrics``: Prometheus text exposition of the process's registry."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from sync_service.metrics import exposition

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
def get_metrics() -> Response:
    body, content_type = exposition()
    return Response(body, media_type=content_type)
