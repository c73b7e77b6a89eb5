"""What a release engineer reads about a fleet over HTTP (any publisher token): a fleet and
its channels, its devices and what each last installed; and retiring a device, by the
device itself (re-registration with ``--force``) or an operator (scope ``admin``).

Retiring revokes the device's tokens: it can no longer read an index or post reports, and
``devices list`` shows it retired. Its row and reports stay for the release history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import and_, or_, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from packager.manifest import format_time
from sync_service import crud
from sync_service.api.deps import AnyPublisherDep, PrincipalDep, SessionDep
from sync_service.crud_releases import reported_source
from sync_service.errors import Forbidden, NotFound, UnknownFleet
from sync_service.index import aware_utc
from sync_service.index_fast_path import token_cache_for
from sync_service.models import DEVICE_ID_MAX, ApiToken, Device, DeviceEvent, now

router = APIRouter(tags=["release engineers"])

FleetName = Annotated[str, Path(pattern=crud.NAME_PATTERN)]
DeviceId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$", max_length=DEVICE_ID_MAX)]
# a search text or a page mark: the characters of device ids and report ids, any first one
_ID_TEXT = r"^[A-Za-z0-9._:-]+$"
_NO_FLEET: dict[int | str, dict[str, Any]] = {404: {"description": "no such fleet"}}
_NO_DEVICE: dict[int | str, dict[str, Any]] = {404: {"description": "no such device"}}
_NO_REPORT: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such device (device_not_found), or no report `before` of it (report_not_found)"}
}
_LISTED_KINDS = ("installed", "install_failed", "golden_failed", "transfer_failed", "stale_index")


class FleetInfo(BaseModel):
    name: str
    channels: list[str]
    created: str


class DevicePublic(BaseModel):
    device_id: str
    fleet: str
    platform: str
    app_version: str
    ort_version: str
    registered: str
    last_seen: str
    retired: bool = Field(description="no valid token: retired, or re-registered under another id")


class DeviceListed(DevicePublic):
    models: dict[str, int] = Field(
        default_factory=dict, description="model → the newest version the device reported installing"
    )
    last_failure: str | None = Field(None, description="the reason of the device's newest failure report")
    last_failure_at: str | None = None
    stale_index: bool = Field(
        False, description="its newest stale_index report is newer than its newest install: it runs "
        "what it has and installs nothing until it reads a fresh index"
    )


class DeviceDetail(DevicePublic):
    installed: dict[str, int] = Field(description="model → the newest version the device reported installing")
    failures: dict[str, int] = Field(description="failure reason → reports")
    installed_from_packs: dict[str, int] = Field(
        default_factory=dict, description="model → the newest version installed from an offline pack"
    )


def _fleet(session: Session, name: str) -> Any:
    fleet = crud.get_fleet(session=session, name=name)
    if fleet is None or fleet.id is None:
        raise UnknownFleet(f"no fleet {name!r} (see `modelsync admin fleet list`)")
    return fleet


@router.get("/v1/fleets/{fleet}", response_model=FleetInfo, responses=_NO_FLEET)
def get_fleet(fleet: FleetName, _user: AnyPublisherDep, session: SessionDep) -> FleetInfo:
    row = _fleet(session, fleet)
    channels = [c.name for c in crud.list_channels(session=session, fleet_id=row.id)]
    return FleetInfo(name=row.name, channels=channels, created=format_time(row.created_at))


def _active_device_ids(session: Session, ids: list[str]) -> set[str]:
    if not ids:
        return set()
    rows = session.exec(
        select(ApiToken.device_id).where(
            col(ApiToken.kind) == "device",
            col(ApiToken.device_id).in_(ids),
            col(ApiToken.revoked_at).is_(None),
        )
    ).all()
    return {r for r in rows if r is not None}


def _public(device: Device, fleet: str, active: set[str]) -> dict[str, Any]:
    return {
        "device_id": device.id, "fleet": fleet, "platform": device.platform,
        "app_version": device.app_version, "ort_version": device.ort_version,
        "registered": format_time(device.registered_at), "last_seen": format_time(device.last_seen_at),
        "retired": device.id not in active,
    }


@router.get("/v1/devices", response_model=list[DeviceListed], responses=_NO_FLEET)
def list_devices(
    _user: AnyPublisherDep,
    session: SessionDep,
    fleet: Annotated[str | None, Query(pattern=crud.NAME_PATTERN)] = None,
    q: Annotated[
        str | None, Query(max_length=DEVICE_ID_MAX, pattern=_ID_TEXT,
                          description="only ids containing this text")
    ] = None,
    after: Annotated[
        str | None, Query(max_length=DEVICE_ID_MAX, pattern=_ID_TEXT,
                          description="the last id of the previous page: the next page starts after it")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[DeviceListed]:
    """Devices by id, a page at a time (``after``), each with what it last installed and
    its newest failure: the console's device list."""
    names = {f.id: f.name for f in crud.list_fleets(session=session)}
    query = select(Device).order_by(col(Device.id)).limit(limit)
    if fleet is not None:
        query = query.where(col(Device.fleet_id) == _fleet(session, fleet).id)
    if q is not None:
        query = query.where(col(Device.id).contains(q, autoescape=True))
    if after is not None:
        query = query.where(col(Device.id) > after)
    devices = session.exec(query).all()
    ids = [d.id for d in devices]
    active = _active_device_ids(session, ids)
    latest = _latest_reports(session, ids)
    return [
        DeviceListed.model_validate({**_public(d, names[d.fleet_id], active), **latest.get(d.id, {})})
        for d in devices
    ]


def _latest_reports(session: Session, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per device: newest installed version per model, newest failure, stale index."""
    if not ids:
        return {}
    # sqlalchemy's select: sqlmodel's typed select takes at most four columns
    rows = session.execute(
        sa_select(col(DeviceEvent.device_id), col(DeviceEvent.kind), col(DeviceEvent.model_name),
                  col(DeviceEvent.model_version), col(DeviceEvent.reason), col(DeviceEvent.at))
        .where(col(DeviceEvent.device_id).in_(ids), col(DeviceEvent.kind).in_(_LISTED_KINDS))
        .order_by(col(DeviceEvent.at))
    ).all()
    out: dict[str, dict[str, Any]] = {}
    last_install: dict[str, Any] = {}
    last_stale: dict[str, Any] = {}
    for device_id, kind, model, version, reason, at in rows:
        entry = out.setdefault(device_id, {"models": {}})
        if kind == "installed":
            # a report that names no model says nothing of what runs; it is no failure either
            if model is not None and version is not None:
                entry["models"][model] = max(entry["models"].get(model, 0), version)
                last_install[device_id] = at
        elif kind == "stale_index":
            last_stale[device_id] = at
        else:
            entry["last_failure"], entry["last_failure_at"] = reason or kind, format_time(aware_utc(at))
    for device_id, at in last_stale.items():
        out[device_id]["stale_index"] = device_id not in last_install or at > last_install[device_id]
    return out


def _device(session: Session, device_id: str) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound(f"no device {device_id!r} (see `modelsync devices list`)", code="device_not_found")
    return device


@router.get("/v1/devices/{device_id}", response_model=DeviceDetail, responses=_NO_DEVICE)
def show_device(device_id: DeviceId, _user: AnyPublisherDep, session: SessionDep) -> DeviceDetail:
    device = _device(session, device_id)
    fleet = crud.get_fleet_by_id(session=session, fleet_id=device.fleet_id)
    events = session.exec(select(DeviceEvent).where(col(DeviceEvent.device_id) == device_id)).all()
    installed: dict[str, int] = {}
    from_packs: dict[str, int] = {}
    failures: dict[str, int] = {}
    for ev in events:
        kind, model, version, reason, data = ev.kind, ev.model_name, ev.model_version, ev.reason, ev.data
        if kind == "installed" and model is not None and version is not None:
            installed[model] = max(installed.get(model, 0), version)
            if reported_source(data) == "pack":
                from_packs[model] = max(from_packs.get(model, 0), version)
        elif kind in ("install_failed", "golden_failed", "stale_index"):
            failures[reason or kind] = failures.get(reason or kind, 0) + 1
    public = _public(device, fleet.name if fleet else "", _active_device_ids(session, [device_id]))
    return DeviceDetail.model_validate(
        {**public, "installed": installed, "failures": failures, "installed_from_packs": from_packs}
    )


class DeviceReport(BaseModel):
    event_id: str
    kind: str
    model: str | None
    version: int | None
    reason: str | None
    at: str = Field(description="when the device says it happened")
    received: str = Field(description="when the service received it")


@router.get("/v1/devices/{device_id}/history", response_model=list[DeviceReport], responses=_NO_REPORT)
def device_history(
    device_id: DeviceId,
    _user: AnyPublisherDep,
    session: SessionDep,
    before: Annotated[
        str | None, Query(max_length=64, pattern=_ID_TEXT,
                          description="the last event_id of the previous page: the page before it")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeviceReport]:
    """One device's reports, newest received first: the console's device page."""
    _device(session, device_id)
    query = select(DeviceEvent).where(col(DeviceEvent.device_id) == device_id)
    if before is not None:
        mark = session.get(DeviceEvent, before)
        if mark is None or mark.device_id != device_id:
            raise NotFound(f"device {device_id!r} has no report {before!r}", code="report_not_found")
        received, event_id = col(DeviceEvent.received_at), col(DeviceEvent.event_id)
        query = query.where(
            or_(received < mark.received_at, and_(received == mark.received_at, event_id < mark.event_id))
        )
    query = query.order_by(col(DeviceEvent.received_at).desc(), col(DeviceEvent.event_id).desc()).limit(limit)
    return [
        DeviceReport(event_id=e.event_id, kind=e.kind, model=e.model_name, version=e.model_version,
                     reason=e.reason, at=format_time(aware_utc(e.at)),
                     received=format_time(aware_utc(e.received_at)))
        for e in session.exec(query).all()
    ]


@router.post(
    "/v1/devices/{device_id}/retire",
    response_model=DevicePublic,
    responses={**_NO_DEVICE, 403: {"description": "neither this device's token nor scope admin"}},
)
def retire_device(
    device_id: DeviceId, request: Request, principal: PrincipalDep, session: SessionDep
) -> DevicePublic:
    own = principal.is_device and principal.device_id == device_id
    if not own and not (principal.is_publisher and "admin" in principal.scopes):
        raise Forbidden("only the device itself or a token with scope 'admin' may retire it")
    device = _device(session, device_id)
    session.execute(
        update(ApiToken)
        .where(
            col(ApiToken.kind) == "device",
            col(ApiToken.device_id) == device_id,
            col(ApiToken.revoked_at).is_(None),
        )
        .values(revoked_at=now())
    )
    session.commit()
    token_cache_for(request.app.state).forget_device(device_id)  # the index fast path's cache
    fleet = crud.get_fleet_by_id(session=session, fleet_id=device.fleet_id)
    return DevicePublic.model_validate(_public(device, fleet.name if fleet else "", set()))
