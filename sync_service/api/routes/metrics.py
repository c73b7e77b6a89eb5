"""``GET /metrics``: Prometheus text exposition of the process's registry, behind
``MODELSYNC_METRICS_TOKEN`` when one is set (route names, fleet sizes and error rates are
not for everyone who can reach the port)."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response

from sync_service.api.deps import SettingsDep, bearer_token
from sync_service.errors import Unauthorized
from sync_service.metrics import exposition

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
        401: {"description": "MODELSYNC_METRICS_TOKEN is set and the bearer token is missing or wrong"},
    },
    # the token is asked for only when the operator set one: none and a bearer both do
    openapi_extra={"security": [{}, {"bearer": []}]},
)
def get_metrics(request: Request, settings: SettingsDep) -> Response:
    if settings.metrics_token is not None:
        expected = settings.metrics_token.get_secret_value().encode()
        if not hmac.compare_digest(bearer_token(request).encode(), expected):
            raise Unauthorized("wrong metrics token", code="invalid_token")
    body, content_type = exposition()
    return Response(body, media_type=content_type)
