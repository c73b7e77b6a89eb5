"""The console's forms (POST): log in and out, and the release actions.

A release action is two posts: the first renders what will change (the release, the new
value, the channel index version it will sign) with a Confirm button; the second, carrying
``confirm=yes``, makes the change through crud_releases (the same call as the API, so it is
audited and signs the index in one transaction) and redirects to the release page, which
names the index version signed.

Every action needs the session's CSRF token in the form (compared in constant time), a
request from the console's own origin when the browser says where it came from, and a token
with the ``release`` scope; the cookie is SameSite=Strict besides."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session

from sync_service import audit, crud, crud_releases
from sync_service.api.deps import SessionDep, SettingsDep, SignerDep
from sync_service.audit import Actor
from sync_service.auth import kind_of
from sync_service.console import sessions
from sync_service.console.deps import ConsoleForbidden, Viewer, ViewerDep
from sync_service.console.pages import not_found, release_context
from sync_service.console.render import page
from sync_service.core.config import Settings
from sync_service.crud_releases import ReleaseView
from sync_service.errors import Conflict, ServiceError
from sync_service.index import cache_for
from sync_service.storage import Storage

router = APIRouter(prefix="/console", include_in_schema=False)

TEXT_LINE = re.compile(r"^[^\x00-\x1f\x7f]{1,1000}$")
TOKEN_MAX = 256
Field = Annotated[str | None, Form()]


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None  # "null": a sandboxed or privacy-stripped request; refuse it
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host


def _check_form(request: Request, viewer: Viewer, csrf: str | None) -> None:
    if not _same_origin(request) or not sessions.csrf_ok_for(viewer.csrf, csrf):
        raise ConsoleForbidden("This form is stale or came from another site: reload the page and try again.")


def _may_release(viewer: Viewer) -> None:
    if not viewer.can_release:
        raise ConsoleForbidden("Your token has no `release` scope: it can read releases, not change them.")


# --------------------------------------------------------------------------- login


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    return page(request, "login.html", {"viewer": None, "next": _next(next), "error": None})


def _next(value: str | None) -> str:
    # only a path of this console: never another host ("//evil"), never a scheme
    if value and value.startswith("/console/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/console/releases"


@router.post("/login")
def login(
    request: Request, session: SessionDep, settings: SettingsDep,
    token: Field = None, next: Field = None,
) -> Response:
    plain = (token or "").strip()
    row = crud.get_token(session=session, plain=plain) if 0 < len(plain) <= TOKEN_MAX else None
    if row is None or row.id is None or row.kind != "publisher":
        message = (
            "That is a device or enrollment token: the console takes a publisher token."
            if row is not None or kind_of(plain) in ("device", "enrollment")
            else "Unknown or revoked token."
        )
        return page(request, "login.html", {"viewer": None, "next": _next(next), "error": message},
                    status_code=401)
    session_id, _ = sessions.open_session(
        session, token_id=row.id, lifetime=settings.console_session_lifetime
    )
    response = RedirectResponse(_next(next), status_code=303)
    response.set_cookie(
        sessions.COOKIE, session_id, max_age=int(settings.console_session_lifetime.total_seconds()),
        path=sessions.COOKIE_PATH, httponly=True, samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
def logout(request: Request, viewer: ViewerDep, session: SessionDep, csrf: Field = None) -> Response:
    _check_form(request, viewer, csrf)
    sessions.close(session, request.cookies.get(sessions.COOKIE))
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(sessions.COOKIE, path=sessions.COOKIE_PATH, httponly=True, samesite="strict")
    return response


# --------------------------------------------------------------------------- release actions


@dataclass
class _Action:
    """One release action's request: checked (form, scope, release) before the handler
    reads its own fields; ``ask``, ``refuse`` and ``apply`` are its three possible answers."""

    request: Request
    viewer: Viewer
    session: Session
    settings: Settings
    storage: Storage
    number: int
    context: dict[str, Any]

    @property
    def release(self) -> dict[str, Any]:
        release: dict[str, Any] = self.context["release"]
        return release

    def refuse(self, message: str, status_code: int = 422) -> HTMLResponse:
        return page(self.request, "release.html",
                    {"viewer": self.viewer, "notice": None, "error": message, **self.context},
                    status_code=status_code)

    def ask(self, action: str, fields: dict[str, str], summary: str) -> HTMLResponse:
        status = self.context["status"]
        return page(self.request, "confirm.html", {
            "viewer": self.viewer, "release": self.release, "action": action, "fields": fields,
            "summary": summary, "next_index": (status.index_version or 0) + 1,
        })

    def apply(self, change: Callable[[Actor], ReleaseView]) -> Response:
        """Make the change (which signs the index), commit, and show the release it changed."""
        try:
            view = change(Actor(self.viewer.principal.token_id, self.viewer.principal.name))
        except ServiceError as exc:
            self.session.rollback()
            context = release_context(self.session, self.settings, self.storage, self.number) or self.context
            conflict = isinstance(exc, Conflict)
            return page(self.request, "release.html",
                        {"viewer": self.viewer, "notice": None, "error": str(exc), **context},
                        status_code=409 if conflict else 400)
        self.session.commit()
        if view.channel.id is not None:
            cache_for(self.request.app.state).forget_channel(view.channel.id)
        events = audit.list_events(self.session, release_id=view.release.id, limit=1)
        where = f"/console/releases/{view.release.id}"
        if events:
            where += f"?changed={events[0].id}"
        return RedirectResponse(where, status_code=303)


def _begin(
    request: Request, viewer: Viewer, session: Session, settings: Settings, release_id: str,
    csrf: str | None,
) -> _Action | HTMLResponse:
    storage: Storage = request.app.state.storage
    _check_form(request, viewer, csrf)
    _may_release(viewer)
    number = int(release_id) if release_id.isdigit() and 1 <= int(release_id) <= 2**31 - 1 else None
    context = release_context(session, settings, storage, number) if number is not None else None
    if number is None or context is None:
        return not_found(request, viewer, f"No release {release_id}.")
    session.rollback()  # the change takes its own locks
    return _Action(request, viewer, session, settings, storage, number, context)


@router.post("/releases/{release_id}/percent")
def set_percent(
    request: Request, release_id: str, viewer: ViewerDep, session: SessionDep, settings: SettingsDep,
    signer: SignerDep, csrf: Field = None, percent: Field = None, confirm: Field = None,
) -> Response:
    act = _begin(request, viewer, session, settings, release_id, csrf)
    if isinstance(act, HTMLResponse):
        return act
    try:
        value = float((percent or "").strip())
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 <= value <= 100):
        return act.refuse(f"The percent must be a number from 0 to 100, not {percent!r}.")
    if confirm != "yes":
        old = act.release["percent"]
        return act.ask("percent", {"percent": f"{value:g}"},
                       f"Change the rollout from {old:g}% to {value:g}% of the fleet's devices.")
    return act.apply(lambda actor: crud_releases.set_percent(
        session=session, signer=signer, release_id=act.number, percent=value, actor=actor))


@router.post("/releases/{release_id}/halt")
def halt(
    request: Request, release_id: str, viewer: ViewerDep, session: SessionDep, settings: SettingsDep,
    signer: SignerDep, csrf: Field = None, reason: Field = None, confirm: Field = None,
) -> Response:
    act = _begin(request, viewer, session, settings, release_id, csrf)
    if isinstance(act, HTMLResponse):
        return act
    text = (reason or "").strip()
    if not TEXT_LINE.match(text):
        return act.refuse("Say why you halt it: one line of up to 1,000 characters.")
    if confirm != "yes":
        return act.ask("halt", {"reason": text},
                       "Halt the rollout: devices that have not installed it stop installing it.")
    return act.apply(lambda actor: crud_releases.halt_release(
        session=session, signer=signer, release_id=act.number, reason=text, actor=actor)[0])


@router.post("/releases/{release_id}/resume")
def resume(
    request: Request, release_id: str, viewer: ViewerDep, session: SessionDep, settings: SettingsDep,
    signer: SignerDep, csrf: Field = None, confirm: Field = None,
) -> Response:
    act = _begin(request, viewer, session, settings, release_id, csrf)
    if isinstance(act, HTMLResponse):
        return act
    if confirm != "yes":
        return act.ask("resume", {}, "Resume the rollout at its percent: devices in it install it again.")
    return act.apply(lambda actor: crud_releases.resume_release(
        session=session, signer=signer, release_id=act.number, actor=actor))


@router.post("/releases/{release_id}/rollback")
def rollback(
    request: Request, release_id: str, viewer: ViewerDep, session: SessionDep, settings: SettingsDep,
    signer: SignerDep, csrf: Field = None, version: Field = None, confirm: Field = None,
) -> Response:
    """Release a published rollback version (old artifacts, re-signed offline as a higher
    version: ``modelsync release rollback``) to the whole channel, urgently."""
    act = _begin(request, viewer, session, settings, release_id, csrf)
    if isinstance(act, HTMLResponse):
        return act
    release = act.release
    chosen = int(version) if version and version.isdigit() else None
    if chosen is None or chosen not in act.context["rollback_candidates"]:
        return act.refuse("Choose one of the published versions listed under Roll back.")
    if confirm != "yes":
        return act.ask("rollback", {"version": str(chosen)},
                       f"Release {release['model']} v{chosen} to 100% of {release['fleet']}/"
                       f"{release['channel']}, urgent: devices install it at their next sync.")
    return act.apply(lambda actor: crud_releases.create_release(
        session=session, signer=signer, fleet=release["fleet"], channel=release["channel"],
        model=release["model"], version=chosen, percent=100.0, urgent=True, actor=actor))
