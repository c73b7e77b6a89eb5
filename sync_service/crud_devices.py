"""Devices: registration (one live device token per device) and report batches, followed
by the rollout health gate.

Reports are idempotent by ``event_id``: one ``INSERT … ON CONFLICT DO NOTHING`` per batch
(PostgreSQL and SQLite both have it), so concurrent retries of the same batch store each
event once and the answer counts the rest as duplicates.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from sync_service import crud, metrics
from sync_service.audit import HEALTH_GATE
from sync_service.crud_releases import ReleaseView, halt_release
from sync_service.errors import DeviceInOtherFleet
from sync_service.health_gate import (
    OUTCOME_KINDS,
    device_counts,
    judge,
    releases_touched,
    serialize_judgement,
)
from sync_service.index import IndexSigner
from sync_service.models import (
    TOKEN_NAME_MAX,
    ApiToken,
    Device,
    DeviceEvent,
    Fleet,
    Platform,
    ReportKind,
    now,
)


@dataclass(frozen=True)
class Event:
    event_id: str
    kind: ReportKind
    at: datetime
    model: str | None = None
    version: int | None = None
    reason: str | None = None
    data: dict[str, Any] | None = None


def _insert(session: Session) -> Any:
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return pg_insert
    if name == "sqlite":
        return sqlite_insert
    raise NotImplementedError(f"database dialect {name!r} is not supported")


def device_token_name(device_id: str) -> str:
    """``device <id>``, cut to fit the name column (a 122+-character id would overflow it):
    only a label, the token row keeps the whole id in ``device_id``."""
    name = f"device {device_id}"
    return name if len(name) <= TOKEN_NAME_MAX else name[: TOKEN_NAME_MAX - 1] + "…"


def register_device(
    *,
    session: Session,
    fleet: Fleet,
    device_id: str,
    platform: Platform,
    app_version: str,
    ort_version: str,
    providers: Sequence[str],
) -> tuple[str, Device]:
    """``(device token, device)``. Registering again revokes the device's older tokens; an id
    already enrolled in another fleet is refused (an enrollment token of fleet B must not
    take over a device of fleet A)."""
    assert fleet.id is not None
    stamp = now()
    session.execute(
        _insert(session)(Device)
        .values(
            id=device_id,
            fleet_id=fleet.id,
            platform=platform,
            app_version=app_version,
            ort_version=ort_version,
            providers=",".join(providers),
            registered_at=stamp,
            last_seen_at=stamp,
        )
        .on_conflict_do_nothing(index_elements=["id"])
    )
    device = session.exec(select(Device).where(Device.id == device_id).with_for_update()).one()
    if device.fleet_id != fleet.id:
        raise DeviceInOtherFleet(f"device {device_id!r} is enrolled in another fleet")
    device.platform = platform
    device.app_version = app_version
    device.ort_version = ort_version
    device.providers = ",".join(providers)
    device.registered_at = stamp
    device.last_seen_at = stamp
    session.add(device)
    session.execute(
        update(ApiToken)
        .where(
            col(ApiToken.kind) == "device",
            col(ApiToken.device_id) == device_id,
            col(ApiToken.revoked_at).is_(None),
        )
        .values(revoked_at=stamp)
    )
    plain, _ = crud.create_token(
        session=session,
        kind="device",
        name=device_token_name(device_id),
        fleet_id=fleet.id,
        device_id=device_id,
    )
    return plain, device


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.utcoffset() is None else moment.astimezone(UTC)


def store_events(*, session: Session, device_id: str, events: Sequence[Event]) -> tuple[int, int]:
    """``(accepted, duplicates)``; also stamps the device's ``last_seen_at``."""
    stamp = now()
    accepted = 0
    if events:
        rows = [
            {
                "event_id": e.event_id,
                "device_id": device_id,
                "kind": e.kind,
                "model_name": e.model,
                "model_version": e.version,
                "reason": e.reason,
                "data": None if e.data is None else json.dumps(e.data, separators=(",", ":"), sort_keys=True),
                "at": _aware(e.at),
                "received_at": stamp,
            }
            for e in events
        ]
        table = DeviceEvent.__table__  # type: ignore[attr-defined]
        # RETURNING lists only the rows this statement inserted (both dialects), which is
        # exact where rowcount is not (PostgreSQL's insertmanyvalues, SQLite's executemany).
        inserted = session.execute(
            _insert(session)(table)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(table.c.event_id)
        ).all()
        accepted = len(inserted)
    session.execute(update(Device).where(col(Device.id) == device_id).values(last_seen_at=stamp))
    duplicates = len(events) - accepted
    metrics.count_reports([e.kind for e in events], duplicates)
    return accepted, duplicates


def apply_health_gate(
    *,
    session: Session,
    signer: IndexSigner,
    fleet_id: int,
    events: Sequence[Event],
    failure_rate: float,
    min_devices: int,
) -> list[ReleaseView]:
    """Halt every release this batch reported on whose failure share reached the threshold."""
    outcomes: set[tuple[str, int]] = set()
    for e in events:
        if e.kind in OUTCOME_KINDS and e.model is not None and e.version is not None:
            outcomes.add((e.model, e.version))
    halted: list[ReleaseView] = []
    for release, _channel, mv in releases_touched(session, fleet_id, outcomes):
        serialize_judgement(session, release)  # in release-id order: releases_touched sorts
        if release.state != "active":
            continue
        counts = device_counts(session, release, fleet_id, mv.name, mv.version)
        verdict = judge(counts.reporting, counts.failing, failure_rate=failure_rate, min_devices=min_devices)
        if not verdict.halt or release.id is None:
            continue
        view, halted_now = halt_release(
            session=session,
            signer=signer,
            release_id=release.id,
            reason=verdict.reason(failure_rate),
            actor=HEALTH_GATE,
            by_health_gate=True,
        )
        if halted_now:
            halted.append(view)
    return halted
