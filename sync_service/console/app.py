"""The console's part of the app: its routers, its static files (the vendored runtime among
them, served by the service itself) and how its two page-level refusals answer."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from sync_service.console import actions, pages
from sync_service.console.deps import ConsoleForbidden, LoginRequired
from sync_service.console.render import STATIC, page


async def _login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    target = "/console/login"
    if request.method == "GET" and exc.path.startswith("/console/") and exc.path != "/console/login":
        target += "?next=" + quote(exc.path, safe="/")
    return RedirectResponse(target, status_code=303)


async def _forbidden(request: Request, exc: Exception) -> Response:
    viewer = None
    return page(request, "error.html", {"viewer": viewer, "title": "Not allowed", "message": str(exc)},
                status_code=403)


def install(app: FastAPI) -> None:
    app.include_router(pages.router)
    app.include_router(actions.router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(ConsoleForbidden, _forbidden)
