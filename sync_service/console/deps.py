"""Who is looking at a console page: the login behind the session cookie, as the API's
:class:`~sync_service.api.deps.Principal`, with the session's CSRF token for its forms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from sync_service.api.deps import Principal, SessionDep
from sync_service.console import sessions


class LoginRequired(Exception):
    """No live login: the page answers with a redirect to the login form."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


class ConsoleForbidden(Exception):
    """A logged-in viewer asked for what their token may not do (403 page)."""


@dataclass(frozen=True)
class Viewer:
    principal: Principal
    csrf: str

    @property
    def can_release(self) -> bool:
        return "release" in self.principal.scopes

    @property
    def name(self) -> str:
        return self.principal.name or f"token {self.principal.token_id}"


def get_viewer(request: Request, session: SessionDep) -> Viewer:
    login = sessions.find(session, request.cookies.get(sessions.COOKIE))
    if login is None or login.token.id is None:
        raise LoginRequired(request.url.path)
    token = login.token
    principal = Principal(
        token_id=login.token.id, kind=token.kind,
        scopes=frozenset(s for s in token.scopes.split(",") if s),
        fleet_id=token.fleet_id, device_id=token.device_id, name=token.name,
    )
    request.state.principal = principal
    session.rollback()  # as deps.get_principal: hand the connection back before the page works
    return Viewer(principal=principal, csrf=login.csrf)


ViewerDep = Annotated[Viewer, Depends(get_viewer)]
