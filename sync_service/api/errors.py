"""The ONE place errors become HTTP answers: a status per class of the service's tree
(sync_service/errors.py) and of the trust failures an upload can raise (packager.errors),
and the handlers that write every error body as ``{"detail": "<one line>", "code":
"<snake_case>"}``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute

from packager.errors import (
    BadSignatureError,
    ExpiredError,
    FormatError,
    ModelSyncError,
    RollbackError,
    ThresholdError,
    UnknownKeyError,
    VerificationError,
    WrongTypeError,
)
from sync_service.errors import (
    BadRequest,
    Conflict,
    DatabaseUnavailable,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
    ServiceError,
    StorageError,
    Unauthorized,
    Unprocessable,
    UnsupportedEncoding,
)

log = logging.getLogger("modelsync.errors")

# Status by class, the nearest class in an error's MRO deciding.
STATUS: Mapping[type[Exception], int] = {
    BadRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    PayloadTooLarge: 413,
    RangeNotSatisfiable: 416,
    UnsupportedEncoding: 415,
    Unprocessable: 422,
    ServiceError: 500,
    StorageError: 503,
    DatabaseUnavailable: 503,
}

# Trust failures of uploaded documents carry no code of their own: (status, code).
VERIFICATION: Mapping[type[VerificationError], tuple[int, str]] = {
    ThresholdError: (403, "untrusted_signature"),
    BadSignatureError: (403, "bad_signature"),
    UnknownKeyError: (403, "unknown_key"),
    WrongTypeError: (422, "wrong_type"),
    FormatError: (422, "malformed_document"),
    ExpiredError: (422, "expired"),
    RollbackError: (409, "rollback"),
    VerificationError: (422, "verification_failed"),
}


def status_of(cls: type[Exception]) -> int:
    """The status every instance of ``cls`` is answered with (the OpenAPI schema's)."""
    if issubclass(cls, StorageError):
        return 503
    for base in cls.__mro__:
        if base in STATUS:
            return STATUS[base]
        if base in VERIFICATION:
            return VERIFICATION[base][0]
    return 500


def status_and_code(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, StorageError):
        # A blob the database names but the store lacks is the store's failure too.
        return 503, StorageError.code
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls], getattr(exc, "code", "internal_error")
        if cls in VERIFICATION:
            return VERIFICATION[cls]
    return 500, "internal_error"


def headers_for(exc: Exception) -> dict[str, str]:
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, RangeNotSatisfiable):
        return {"Content-Range": f"bytes */{exc.length}"}
    if isinstance(exc, UnsupportedEncoding):
        return {"Accept-Encoding": "identity"}  # RFC 9110 §15.5.16
    return {}


def error_response(
    status: int, detail: str, code: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"detail": detail, "code": code}, status_code=status, headers=dict(headers or {}))


def _one_line(text: str) -> str:
    return " ".join(text.split())


async def _modelsync_handler(request: Request, exc: Exception) -> JSONResponse:
    status, code = status_and_code(exc)
    if status >= 500:
        log.error("%s failed on %s: %s", type(exc).__name__, request.url.path, exc)
    return error_response(status, _one_line(str(exc)), code, headers_for(exc))


def _allow(routes: Sequence[BaseRoute], path: str) -> str:
    """Every method the path is served with (Starlette's 405 names only the first route
    matching the path, so ``GET`` for a path that also takes ``PATCH``)."""
    matching = [r for r in routes if isinstance(r, APIRoute) and r.path_regex.match(path)]
    # OpenAPI matches a concrete path before a templated one: /v1/devices/register is that
    # operation's path, not /v1/devices/{device_id} with the id "register"
    concrete = [r for r in matching if r.path == path]
    methods: set[str] = set()
    for route in concrete or matching:
        methods |= route.methods or set()
    return ", ".join(sorted(methods))


def _http_handler(routes: Sequence[BaseRoute]) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {
            400: "bad_request",  # FastAPI's, for a body it could not decode
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
            413: PayloadTooLarge.code,  # sync_service/api/body_cap.py
        }.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allow(routes, request.url.path) or headers.get("Allow", "")
        return error_response(exc.status_code, _one_line(str(exc.detail)), code, headers)

    return handle


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if errors:
        first = errors[0]
        loc = ".".join(str(p) for p in first.get("loc", ())) or "(request)"
        detail = f"{loc}: {first.get('msg', 'invalid')}"
    else:
        detail = "invalid request"
    return error_response(422, _one_line(detail), "validation_error")


async def _database_handler(request: Request, exc: Exception) -> JSONResponse:
    log.error("database failed on %s: %s", request.url.path, _one_line(str(exc))[:500])
    # The driver's message may name hosts and users: only its class goes to the client.
    detail = f"database unavailable ({type(getattr(exc, 'orig', None) or exc).__name__}): retry"
    return error_response(503, detail, DatabaseUnavailable.code)


async def _internal_handler(request: Request, exc: Exception) -> JSONResponse:
    # A bug: still the one error body (Starlette re-raises afterwards, so it is logged).
    return error_response(500, "internal error", "internal_error")


def install_error_handlers(app: FastAPI, routes: Sequence[BaseRoute] = ()) -> None:
    """``routes``: the app's operations, for the ``Allow`` header of a 405."""
    app.add_exception_handler(ModelSyncError, _modelsync_handler)
    app.add_exception_handler(OperationalError, _database_handler)
    app.add_exception_handler(Exception, _internal_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler(routes))
    app.add_exception_handler(RequestValidationError, _validation_handler)
