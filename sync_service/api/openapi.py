"""The OpenAPI schema as the service answers: every error body is ``ErrorBody`` (never
FastAPI's default validation error, whose ``detail`` is a list), and every operation lists
each status it can answer.

Statuses come from where they are raised, not from a hand-kept list per route: a
dependency marked ``@raises(Unauthorized)`` adds 401 to every route that uses it (directly or
through another dependency), any route with a parameter or body can answer 422, and a route
names its own refusals with ``responses=refusals({NotFound: "…"})``. The status of each class
is the one mapping, sync_service/api/errors.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from http import HTTPStatus
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from sync_service.api.errors import status_of
from sync_service.errors import Unprocessable

F = TypeVar("F", bound=Callable[..., Any])
_RAISES = "modelsync_raises"
ERROR_REF = "#/components/schemas/ErrorBody"
# Headers every answer of these statuses carries (sync_service/api/errors.py, headers_for).
_ERROR_HEADERS: Mapping[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}, "required": True}},
    416: {"Content-Range": {"description": "bytes */LENGTH", "schema": {"type": "string"}, "required": True}},
}


class ErrorBody(BaseModel):
    """Every 4xx and 5xx body (docs/protocol.md)."""

    detail: str = Field(description="one line, for people")
    code: str = Field(description="snake_case, for programs (docs/protocol.md lists them)")


def raises(*classes: type[Exception]) -> Callable[[F], F]:
    """Mark a dependency (or route function) with the error classes it raises."""

    def mark(fn: F) -> F:
        setattr(fn, _RAISES, (*getattr(fn, _RAISES, ()), *classes))
        return fn

    return mark


def refusals(described: Mapping[type[Exception], str]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route's own refusals, by error class: statuses from the mapping,
    descriptions of the same status joined."""
    out: dict[int | str, dict[str, Any]] = {}
    for cls, description in described.items():
        entry = out.setdefault(status_of(cls), {"description": description, "model": ErrorBody})
        if description not in entry["description"]:
            entry["description"] += f"; {description}"
    return out


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def statuses_of(route: APIRoute) -> set[int]:
    """The error statuses a route answers beyond its own ``responses``."""
    found: set[int] = set()
    has_input = False
    for dep in _dependants(route.dependant):
        for cls in getattr(dep.call, _RAISES, ()):
            found.add(status_of(cls))
        if dep.path_params or dep.query_params or dep.header_params or dep.cookie_params or dep.body_params:
            has_input = True
        if dep.body_params:
            found.add(400)  # FastAPI's answer to a body it cannot decode (not UTF-8, say)
            found.add(413)  # over the request body cap (sync_service/api/body_cap.py)
    if has_input:
        found.add(status_of(Unprocessable))  # the validation handler's answer
    return found


def _document(operation: dict[str, Any], extra: set[int]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for status in sorted(extra):
        responses.setdefault(str(status), {"description": HTTPStatus(status).phrase})
    for key, entry in responses.items():
        if not key.isdigit() or int(key) < 400:
            continue
        entry["content"] = {"application/json": {"schema": {"$ref": ERROR_REF}}}
        if int(key) in _ERROR_HEADERS:
            entry["headers"] = _ERROR_HEADERS[int(key)]
    if "401" in responses:  # an operation whose token is optional says so itself
        operation.setdefault("security", [{"bearer": []}])


def build_schema(app: FastAPI, routes: Sequence[APIRoute]) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    for route in routes:
        if not route.include_in_schema:
            continue
        extra = statuses_of(route) | {
            status_of(cls) for cls in getattr(route.endpoint, _RAISES, ())
        }
        for method in route.methods or ():
            _document(schema["paths"][route.path_format][method.lower()], extra)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas["ErrorBody"] = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return schema


def install_openapi(app: FastAPI, routes: Sequence[APIRoute]) -> None:
    """Serve ``build_schema`` at /openapi.json; ``routes``: the app's operations."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_schema(app, routes)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
