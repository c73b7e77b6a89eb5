"""Devices: registration with a fleet's enrollment token, and report batches (then the
rollout health gate, sync_service/health_gate.py)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from packager.manifest import first_error
from sync_service import behaviour, crud, crud_devices, shadow
from sync_service.api.deps import (
    TEXT_LINE,
    DeviceDep,
    EnrollmentDep,
    SessionDep,
    SettingsDep,
    SignerDep,
    StorageDep,
    Version,
)
from sync_service.api.openapi import refusals
from sync_service.behaviour import BehaviourData
from sync_service.errors import DeviceInOtherFleet, Forbidden, UnknownFleet, Unprocessable
from sync_service.index import cache_for
from sync_service.index_fast_path import token_cache_for
from sync_service.models import DEVICE_ID_MAX, PROVIDERS_MAX, Device, Platform, ReportKind
from sync_service.shadow import ShadowData

router = APIRouter(prefix="/v1/devices", tags=["devices"])
log = logging.getLogger("modelsync.devices")

MAX_EVENTS = 500
DEVICE_ID = rf"^[A-Za-z0-9][A-Za-z0-9._:-]{{0,{DEVICE_ID_MAX - 1}}}$"
DeviceId = Annotated[str, Path(pattern=DEVICE_ID, max_length=DEVICE_ID_MAX)]


class DeviceRegister(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_id: str = Field(pattern=DEVICE_ID, max_length=DEVICE_ID_MAX)
    platform: Platform
    app_version: str = Field("", max_length=32, pattern=TEXT_LINE)
    ort_version: str = Field("", max_length=32, pattern=TEXT_LINE)
    providers: list[Annotated[str, Field(min_length=1, max_length=64, pattern=TEXT_LINE)]] = Field(
        default_factory=list,
        max_length=16,
        description=f"at most 16, each at most 64 characters, at most {PROVIDERS_MAX} in all with "
        "a comma between each two (as stored)",
    )

    @field_validator("providers")
    @classmethod
    def _fits_the_column(cls, value: list[str]) -> list[str]:
        joined = len(",".join(value))
        if joined > PROVIDERS_MAX:
            raise ValueError(f"{joined} characters joined by commas, at most {PROVIDERS_MAX}")
        return value


class DeviceRegistered(BaseModel):
    device_token: str = Field(description="shown once; re-registering revokes it")
    fleet: str
    device_id: str


class ReportEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_id: str = Field(
        pattern=r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$",
        description="a UUID, unique per event: the idempotency key",
    )
    kind: ReportKind
    at: datetime
    model: str | None = Field(None, max_length=64, pattern=TEXT_LINE)
    version: Version | None = None
    reason: str | None = Field(None, max_length=256, pattern=TEXT_LINE)
    data: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _behaviour(self) -> ReportEvent:
        if self.kind == "behaviour":
            if self.model is None or self.version is None:
                raise ValueError("a behaviour report names its model and version")
            if self.data is None:
                raise ValueError("a behaviour report carries its data (docs/protocol.md)")
            try:
                self.data = BehaviourData.model_validate(self.data).model_dump(mode="json")
            except ValidationError as exc:
                raise ValueError(f"behaviour data: {first_error(exc)}") from None
        if self.kind == "shadow":
            if self.model is None or self.version is None or self.data is None:
                raise ValueError("a shadow report names its model and version and carries its data")
            try:
                self.data = ShadowData.model_validate(self.data).model_dump(mode="json")
            except ValidationError as exc:
                raise ValueError(f"shadow data: {first_error(exc)}") from None
        return self

    @field_validator("at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.utcoffset() is None:
            return value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except OverflowError:
            # A valid RFC 3339 time whose UTC moment is before year 1 or after 9999: the
            # schema's date-time allows it, so it is kept, at the nearest representable end.
            offset = value.utcoffset()
            assert offset is not None
            return (datetime.min if offset > timedelta(0) else datetime.max).replace(tzinfo=UTC)


class ReportBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[ReportEvent] = Field(max_length=MAX_EVENTS)


class ReportAccepted(BaseModel):
    accepted: int
    duplicates: int


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    responses=refusals(
        {
            DeviceInOtherFleet: "the device id is enrolled in another fleet",
            UnknownFleet: "the enrollment token's fleet no longer exists",
        }
    ),
)
def register_device(
    body: DeviceRegister, request: Request, session: SessionDep, enrollment: EnrollmentDep
) -> DeviceRegistered:
    assert enrollment.fleet_id is not None
    fleet = crud.get_fleet_by_id(session=session, fleet_id=enrollment.fleet_id)
    if fleet is None:
        raise UnknownFleet("the enrollment token's fleet no longer exists")
    token, _device = crud_devices.register_device(
        session=session,
        fleet=fleet,
        device_id=body.device_id,
        platform=body.platform,
        app_version=body.app_version,
        ort_version=body.ort_version,
        providers=body.providers,
    )
    session.commit()
    token_cache_for(request.app.state).forget_device(body.device_id)
    return DeviceRegistered(device_token=token, fleet=fleet.name, device_id=body.device_id)


@router.post(
    "/{device_id}/reports",
    responses=refusals({
        Forbidden: "the token belongs to another device",
        Unprocessable: "a behaviour report for a version the device never installed "
        "(behaviour_not_installed), or with another bin count than its manifest's (wrong_bin_count); "
        "a shadow report for a version never released in shadow mode in the fleet (shadow_not_released)",
    }),
)
def post_reports(
    device_id: DeviceId,
    body: ReportBatch,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    signer: SignerDep,
    storage: StorageDep,
    device: DeviceDep,
) -> ReportAccepted:
    if device.device_id != device_id:
        raise Forbidden("a device may post only its own reports", code="wrong_device")
    row = session.get(Device, device_id)
    if row is None or row.fleet_id != device.fleet_id:
        raise Forbidden("this device is not registered in the token's fleet", code="wrong_device")
    events = [
        crud_devices.Event(
            event_id=e.event_id.lower().replace("-", ""),
            kind=e.kind,
            at=e.at,
            model=e.model,
            version=e.version,
            reason=e.reason,
            data=e.data,
        )
        for e in body.events
    ]
    behaviour.check_reports(session, storage, device_id, events)  # before anything is stored
    shadow.check_reports(session, row.fleet_id, events)
    accepted, duplicates = crud_devices.store_events(session=session, device_id=device_id, events=events)
    halted = crud_devices.apply_health_gate(
        session=session,
        signer=signer,
        fleet_id=row.fleet_id,
        events=events,
        failure_rate=settings.health_failure_rate,
        min_devices=settings.health_min_devices,
    )
    halted += behaviour.apply_gate(
        session=session, storage=storage, signer=signer, fleet_id=row.fleet_id, events=events
    )
    session.commit()
    for view in halted:
        log.warning("release %s halted: %s", view.release.id, view.release.halt_reason)
        if view.channel.id is not None:
            cache_for(request.app.state).forget_channel(view.channel.id)
    return ReportAccepted(accepted=accepted, duplicates=duplicates)
