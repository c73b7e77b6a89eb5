"""The sync service's error tree and the ONE place that maps errors to HTTP answers.

    ModelSyncError (packager.errors)
    ├── ServiceConfigError         the service cannot start: settings, keys, storage
    │   └── DatabaseNotMigrated    the database is empty or behind the code's migrations
    ├── StorageError               (sync_service.storage.base) a blob store failed: 503
    └── ServiceError               a request is refused; carries status and a snake_case code
        ├── BadRequest             400  malformed input (tar, headers, query)
        │   └── BundleRejected     400  the bundle does not match its manifest
        ├── Unauthorized           401  missing, unknown or revoked token
        ├── Forbidden              403  valid token, wrong scope or fleet
        ├── NotFound               404
        ├── Conflict               409
        ├── PayloadTooLarge        413
        ├── RangeNotSatisfiable    416
        ├── Unprocessable          422
        └── Unavailable            503

Signature errors from ``packager.errors`` raised while verifying an upload become 403 with
codes ``untrusted_signature`` / ``bad_signature`` / ``unknown_key``; a malformed document is
422. Every error body is ``{"detail": "<one line>", "code": "<snake_case>"}``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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

log = logging.getLogger("modelsync.errors")


class ServiceConfigError(ModelSyncError):
    pass


class DatabaseNotMigrated(ServiceConfigError):
    pass


class ServiceError(ModelSyncError):
    status = 500
    code = "internal_error"

    def __init__(
        self, detail: str, *, code: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})


class BadRequest(ServiceError):
    status = 400
    code = "bad_request"


class BundleRejected(BadRequest):
    code = "bad_bundle"


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail, code=code, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ServiceError):
    status = 413
    code = "payload_too_large"


class RangeNotSatisfiable(ServiceError):
    status = 416
    code = "range_not_satisfiable"


class Unprocessable(ServiceError):
    status = 422
    code = "unprocessable"


class Unavailable(ServiceError):
    status = 503
    code = "unavailable"


# Trust failures of uploaded documents: (status, code). Order matters: subclasses first.
_VERIFICATION: tuple[tuple[type[VerificationError], int, str], ...] = (
    (ThresholdError, 403, "untrusted_signature"),
    (BadSignatureError, 403, "bad_signature"),
    (UnknownKeyError, 403, "unknown_key"),
    (WrongTypeError, 422, "wrong_type"),
    (FormatError, 422, "malformed_document"),
    (ExpiredError, 422, "expired"),
    (RollbackError, 409, "rollback"),
)


def status_and_code(exc: Exception) -> tuple[int, str]:
    from sync_service.storage.base import StorageError

    if isinstance(exc, ServiceError):
        return exc.status, exc.code
    if isinstance(exc, StorageError):
        return 503, "storage_unavailable"
    for cls, status, code in _VERIFICATION:
        if isinstance(exc, cls):
            return status, code
    if isinstance(exc, VerificationError):
        return 422, "verification_failed"
    return 500, "internal_error"


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
    headers = exc.headers if isinstance(exc, ServiceError) else None
    return error_response(status, _one_line(str(exc)), code, headers)


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}.get(
        exc.status_code, "http_error"
    )
    return error_response(exc.status_code, _one_line(str(exc.detail)), code, exc.headers)


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


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ModelSyncError, _modelsync_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
