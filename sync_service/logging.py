"""JSON logs, one line per record, each carrying the request id of the request it belongs to.

The request id comes from the client's ``X-Request-ID`` when it is a sane token (so a
device's or a load balancer's id follows the request through), otherwise a fresh one; it
is echoed in the response's ``X-Request-ID`` and attached to every log record emitted while
the request runs (a context variable, so it follows the request across threads that
Starlette's threadpool copies the context into).
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.json import JsonFormatter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = b"x-request-id"
_SANE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")

request_id_var: ContextVar[str | None] = ContextVar("modelsync_request_id", default=None)
access_log = logging.getLogger("modelsync.access")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def json_handler(stream: Any = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
    )
    handler.addFilter(RequestIdFilter())
    return handler


def configure_logging(level: str | int = "INFO", stream: Any = None) -> logging.Handler:
    """Route the root logger (and uvicorn's) through one JSON handler; idempotent."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_modelsync_json", False):
            root.removeHandler(h)
    handler = json_handler(stream)
    handler._modelsync_json = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # The middleware below writes the access log, with the request id; uvicorn's is a duplicate.
    logging.getLogger("uvicorn.access").disabled = True
    return handler


def pick_request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == REQUEST_ID_HEADER and _SANE_ID.match(value):
            return value.decode("ascii")
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Pure ASGI: sets the request id, echoes it, writes one access-log record."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = pick_request_id(scope.get("headers", []))
        token = request_id_var.set(rid)
        start = time.perf_counter()
        status = 500
        raw_id = rid.encode("ascii")

        async def with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [h for h in message.get("headers", []) if h[0].lower() != REQUEST_ID_HEADER]
                headers.append((REQUEST_ID_HEADER, raw_id))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, with_id)
        finally:
            # 304s are the devices' polling, most of the traffic and all alike: DEBUG, so an
            # INFO log holds the requests that changed or fetched something (metrics count all).
            level = logging.DEBUG if status == 304 else logging.INFO
            if access_log.isEnabledFor(level):
                access_log.log(
                    level,
                    "%s %s %d",
                    scope.get("method", ""),
                    scope.get("path", ""),
                    status,
                    extra={
                        "method": scope.get("method", ""),
                        "path": scope.get("path", ""),
                        "status": status,
                        "duration_ms": round((time.perf_counter() - start) * 1000, 3),
                    },
                )
            request_id_var.reset(token)
