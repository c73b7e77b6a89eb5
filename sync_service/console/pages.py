"""The console's pages (GET): each reads what a documented JSON endpoint answers, by calling
the same function, and renders it. Paths and query values are checked with the API's own
patterns; a value that does not match renders a 4xx page, not a 500."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session

from sync_service import adoption, audit, behaviour, crud, crud_releases
from sync_service.api.deps import SessionDep, SettingsDep, StorageDep
from sync_service.api.routes import inventory
from sync_service.api.routes.models_api import check_parity, version_card
from sync_service.api.routes.releases import ReleaseBehaviour, ReleaseStatus
from sync_service.console import chart
from sync_service.console.deps import Viewer, ViewerDep
from sync_service.console.render import page
from sync_service.errors import NotFound, ServiceError
from sync_service.models import DEVICE_ID_MAX, ModelVersion
from sync_service.storage import Storage, blob_key

router = APIRouter(prefix="/console", include_in_schema=False)

PAGE = 50  # rows per page of the device list and the audit log
NAME = re.compile(crud.NAME_PATTERN)
MODEL = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
ID_TEXT = re.compile(r"^[A-Za-z0-9._:-]+$")
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
INT_MAX = 2**31 - 1


def not_found(request: Request, viewer: Viewer, what: str, status_code: int = 404) -> HTMLResponse:
    return page(request, "error.html", {"viewer": viewer, "title": "Not found", "message": what},
                status_code=status_code)


def _name(value: str | None) -> str | None:
    return value if value and NAME.match(value) and len(value) <= 64 else None


def _id_text(value: str | None) -> str | None:
    return value if value and ID_TEXT.match(value) and len(value) <= DEVICE_ID_MAX else None


def _number(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and 1 <= int(value) <= INT_MAX else None


@router.get("")
@router.get("/")
def home() -> Response:
    return RedirectResponse("/console/releases", status_code=303)


# --------------------------------------------------------------------------- models


@router.get("/models")
def models_page(request: Request, viewer: ViewerDep, session: SessionDep) -> HTMLResponse:
    models = crud.list_model_versions(session=session)
    return page(request, "models.html", {"viewer": viewer, "models": models})


def _model_version(session: Session, name: str, version: str) -> ModelVersion | None:
    number = _number(version)
    if not MODEL.match(name) or number is None:
        return None
    mv = crud.get_model_version(session=session, name=name, version=number)
    return mv if mv is not None and mv.id is not None else None


@router.get("/models/{name}/{version}")
def model_version_page(
    request: Request, name: str, version: str, viewer: ViewerDep, session: SessionDep,
    storage: StorageDep,
) -> HTMLResponse:
    mv = _model_version(session, name, version)
    if mv is None:
        return not_found(request, viewer, f"No model {name} version {version}.")
    card = version_card(session, storage, mv)
    releases = [
        v.public() for v in crud_releases.list_releases(session=session)
        if v.model_version.id == mv.id
    ]
    cpu = next((a for a in card.artifacts if a.target == "cpu"), None)
    return page(request, "model_version.html", {
        "viewer": viewer, "card": card, "releases": releases, "cpu": cpu,
    })


def artifact_bytes(storage: Storage, session: Session, name: str, version: str, sha256: str) -> bytes | None:
    """The bytes of an artifact of a published model version, for the try-it panel."""
    mv = _model_version(session, name, version)
    if mv is None or not re.fullmatch(r"[0-9a-f]{64}", sha256):
        return None
    if all(a.sha256 != sha256 for a in crud.list_artifacts(session=session, model_version_id=mv.id or 0)):
        return None
    return storage.get(blob_key(sha256))


@router.get("/models/{name}/{version}/artifacts/{sha256}")
def artifact_download(
    request: Request, name: str, version: str, sha256: str, viewer: ViewerDep, session: SessionDep,
    storage: StorageDep,
) -> Response:
    data = artifact_bytes(storage, session, name, version, sha256)
    if data is None:
        return not_found(request, viewer, "No such artifact of this model version.")
    return Response(data, media_type="application/octet-stream",
                    headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"})


@router.get("/models/{name}/{version}/parity.json")
def parity_json(
    request: Request, name: str, version: str, viewer: ViewerDep, session: SessionDep, storage: StorageDep,
) -> Response:
    """GET /v1/models/{name}/versions/{v}/parity's answer, for the try-it panel's script."""
    mv = _model_version(session, name, version)
    if mv is None:
        return not_found(request, viewer, f"No model {name} version {version}.")
    try:
        result = check_parity(mv.name, mv.version, viewer.principal, session, storage, "cpu")
    except NotFound as exc:
        return not_found(request, viewer, str(exc))
    return Response(result.model_dump_json(), media_type="application/json",
                    headers={"Cache-Control": "no-store"})


# --------------------------------------------------------------------------- releases


@router.get("/releases")
def releases_page(
    request: Request, viewer: ViewerDep, session: SessionDep,
    fleet: Annotated[str | None, Query()] = None,
    state: Annotated[str | None, Query()] = None,
) -> HTMLResponse:
    fleet_name = _name(fleet)
    chosen_state = state if state in ("active", "halted", "superseded") else None
    views = crud_releases.list_releases(session=session, fleet=fleet_name, state=chosen_state)  # type: ignore[arg-type]
    fleets = [f.name for f in crud.list_fleets(session=session)]
    return page(request, "releases.html", {
        "viewer": viewer, "releases": [v.public() for v in views], "fleets": fleets,
        "fleet": fleet_name, "state": chosen_state,
    })


def release_context(
    session: Session, settings: Any, storage: Storage, release_id: int, points: int = 60
) -> dict[str, Any] | None:
    view = crud_releases.get_release(session=session, release_id=release_id)
    if view is None:
        return None
    status = ReleaseStatus.model_validate({
        **crud_releases.release_status(session=session, release_id=release_id),
        "gate_failure_rate": settings.health_failure_rate,
        "gate_min_devices": settings.health_min_devices,
    })
    curve = adoption.adoption(session, view, points=points)
    behaving = ReleaseBehaviour.model_validate(behaviour.release_behaviour(session, storage, view))
    history = [audit.public(e) for e in audit.list_events(session, release_id=release_id, limit=20)]
    # what a roll back can release: published versions of the model above this one that the
    # channel has not released yet (a rollback bundle is re-signed offline, then published)
    released = {
        v.model_version.version
        for v in crud_releases.list_releases(
            session=session, fleet=view.fleet.name, channel=view.channel.name
        )
        if v.model_version.name == view.model_version.name
    }
    versions = crud.list_model_versions(session=session).get(view.model_version.name, [])
    candidates = [v for v in versions if v > max(released, default=view.model_version.version)]
    return {
        "release": view.public(),
        "status": status,
        "adoption": curve,
        "chart": chart.build(curve["points"]),
        "behaviour": behaving,
        "audit": history,
        "rollback_candidates": candidates,
        "next_version": max(versions, default=view.model_version.version) + 1,
    }


@router.get("/releases/{release_id}")
def release_page(
    request: Request, release_id: str, viewer: ViewerDep, session: SessionDep, settings: SettingsDep,
    storage: StorageDep, changed: Annotated[str | None, Query()] = None,
) -> HTMLResponse:
    number = _number(release_id)
    context = release_context(session, settings, storage, number) if number is not None else None
    if context is None:
        return not_found(request, viewer, f"No release {release_id}.")
    notice = None
    change_id = _number(changed)
    if change_id is not None:
        events = audit.list_events(session, release_id=number, before=change_id + 1, limit=1)
        if events and events[0].id == change_id:
            notice = audit.public(events[0])
    return page(request, "release.html", {"viewer": viewer, "notice": notice, **context})


# --------------------------------------------------------------------------- devices


@router.get("/devices")
def devices_page(
    request: Request, viewer: ViewerDep, session: SessionDep,
    fleet: Annotated[str | None, Query()] = None,
    q: Annotated[str | None, Query()] = None,
    after: Annotated[str | None, Query()] = None,
) -> HTMLResponse:
    fleet_name, search, mark = _name(fleet), _id_text(q), _id_text(after)
    refused = q is not None and q != "" and search is None
    try:
        devices = [] if refused else inventory.list_devices(
            viewer.principal, session, fleet=fleet_name, q=search, after=mark, limit=PAGE + 1)
    except ServiceError as exc:  # an unknown fleet
        return not_found(request, viewer, str(exc))
    more = len(devices) > PAGE
    devices = devices[:PAGE]
    fleets = [f.name for f in crud.list_fleets(session=session)]
    return page(request, "devices.html", {
        "viewer": viewer, "devices": devices, "fleets": fleets, "fleet": fleet_name, "q": search or "",
        "refused": refused, "next_after": devices[-1].device_id if more and devices else None,
        "first_page": mark is None,
    }, status_code=422 if refused else 200)


@router.get("/devices/{device_id}")
def device_page(
    request: Request, device_id: str, viewer: ViewerDep, session: SessionDep,
    before: Annotated[str | None, Query()] = None,
) -> HTMLResponse:
    if not DEVICE_ID.match(device_id) or len(device_id) > DEVICE_ID_MAX:
        return not_found(request, viewer, "No such device.")
    try:
        device = inventory.show_device(device_id, viewer.principal, session)
        reports = inventory.device_history(device_id, viewer.principal, session,
                                           before=_id_text(before), limit=PAGE + 1)
    except NotFound as exc:
        return not_found(request, viewer, str(exc))
    more = len(reports) > PAGE
    reports = reports[:PAGE]
    return page(request, "device.html", {
        "viewer": viewer, "device": device, "reports": reports,
        "next_before": reports[-1].event_id if more else None, "first_page": before is None,
    })


# --------------------------------------------------------------------------- audit


@router.get("/audit")
def audit_page(
    request: Request, viewer: ViewerDep, session: SessionDep,
    fleet: Annotated[str | None, Query()] = None,
    before: Annotated[str | None, Query()] = None,
) -> HTMLResponse:
    fleet_name = _name(fleet)
    events = audit.list_events(session, fleet=fleet_name, before=_number(before), limit=PAGE + 1)
    more = len(events) > PAGE
    rows = [audit.public(e) for e in events[:PAGE]]
    fleets = [f.name for f in crud.list_fleets(session=session)]
    return page(request, "audit.html", {
        "viewer": viewer, "events": rows, "fleets": fleets, "fleet": fleet_name,
        "next_before": rows[-1]["id"] if more else None, "first_page": before is None,
    })
