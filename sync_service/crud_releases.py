"""Releases: create, set percent, halt, resume; and each release's status.

Every change writes the channel's next signed index in the caller's transaction (flushed,
not committed): the route commits the change and its index together, or neither.

Rules (docs/protocol.md, "Releases"):
- within a channel a model's released versions only go up; a rollback is a new, higher
  version (``modelsync release rollback``);
- a new release supersedes the model's older active releases except the newest one rolled
  out to 100%, which stays as the fallback for devices outside the new rollout;
- halting is a conditional update (``state = 'active'`` in the WHERE clause), so two
  replicas halting the same release at once write one halt, not two.
"""

from __future__ import annotations

import json
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import distinct, func, update
from sqlmodel import Session, col, select

from packager.rollout import rollout_bucket
from sync_service import audit, metrics
from sync_service.audit import Actor
from sync_service.errors import (
    NewerReleaseActive,
    NotShadow,
    ReleaseHalted,
    ReleaseSuperseded,
    UnknownChannel,
    UnknownFleet,
    UnknownModelVersion,
    UnknownRelease,
    VersionNotNewer,
)
from sync_service.health_gate import FAILURE_KINDS, device_counts
from sync_service.index import (
    IndexSigner,
    StoredIndex,
    aware_utc,
    lock_channel,
    newest_head,
    write_new_version,
)
from sync_service.models import (
    Channel,
    Device,
    DeviceEvent,
    Fleet,
    ModelVersion,
    Release,
    ReleaseState,
    now,
)


@dataclass(frozen=True)
class ReleaseView:
    """A release with the names the wire format uses."""

    release: Release
    fleet: Fleet
    channel: Channel
    model_version: ModelVersion

    def public(self) -> dict[str, Any]:
        r = self.release
        return {
            "id": r.id,
            "fleet": self.fleet.name,
            "channel": self.channel.name,
            "model": self.model_version.name,
            "version": self.model_version.version,
            "percent": r.percent,
            "salt": r.salt,
            "urgent": r.urgent,
            "mode": r.mode,
            "report_after": ({"rows": r.report_rows, "hours": r.report_hours}
                             if r.report_rows is not None else None),
            "state": r.state,
            "halt_reason": r.halt_reason,
            "halted_by_health_gate": r.halted_by_health_gate,
            "behaviour_gate": json.loads(r.behaviour_gate) if r.behaviour_gate else None,
            "schedule": phase_state(r),
            "created": r.created_at,
            "updated": r.updated_at,
        }


def phase_state(release: Release) -> dict[str, Any] | None:
    """Where a phased release stands: for status and the console (None: no schedule)."""
    if not release.phases:
        return None
    phases = json.loads(release.phases)
    index = release.phase
    since = aware_utc(release.phase_since or release.created_at)
    last = index >= len(phases) - 1
    next_at = None if last else since + timedelta(seconds=phases[index]["hold_s"])
    return {
        "phase": index + 1, "of": len(phases), "percent": phases[index]["percent"],
        "since": since, "phases": phases,
        "next_percent": None if last else phases[index + 1]["percent"], "next_judgement": next_at,
        "done": last,
    }


def _views_query() -> Any:
    return (
        select(Release, Fleet, Channel, ModelVersion)
        .join(Channel, col(Channel.id) == col(Release.channel_id))
        .join(Fleet, col(Fleet.id) == col(Channel.fleet_id))
        .join(ModelVersion, col(ModelVersion.id) == col(Release.model_version_id))
    )


def get_release(*, session: Session, release_id: int) -> ReleaseView | None:
    row = session.exec(_views_query().where(col(Release.id) == release_id)).first()
    return ReleaseView(*row) if row is not None else None


def list_releases(
    *,
    session: Session,
    fleet: str | None = None,
    channel: str | None = None,
    state: ReleaseState | None = None,
) -> list[ReleaseView]:
    query = _views_query()
    if fleet is not None:
        query = query.where(col(Fleet.name) == fleet)
    if channel is not None:
        query = query.where(col(Channel.name) == channel)
    if state is not None:
        query = query.where(col(Release.state) == state)
    query = query.order_by(col(Release.id).desc())
    return [ReleaseView(*row) for row in session.exec(query).all()]


def _require(*, session: Session, release_id: int, lock: bool = False) -> ReleaseView:
    view = get_release(session=session, release_id=release_id)
    if view is None:
        raise UnknownRelease(f"no release {release_id}")
    if lock and view.channel.id is not None:
        lock_channel(session, view.channel.id)
        session.refresh(view.release)  # as it is now that concurrent changes are behind us
    return view


def _model_releases(session: Session, channel_id: int, model: str) -> list[tuple[Release, ModelVersion]]:
    stmt = (
        select(Release, ModelVersion)
        .join(ModelVersion, col(ModelVersion.id) == col(Release.model_version_id))
        .where(Release.channel_id == channel_id, Release.model_name == model)
    )
    return [(r, mv) for r, mv in session.exec(stmt).all()]


def _reindex(session: Session, channel: Channel, signer: IndexSigner) -> StoredIndex:
    stored = write_new_version(session, channel, signer)
    metrics.count_index_signed("change")
    return stored


def create_release(
    *,
    session: Session,
    signer: IndexSigner,
    fleet: str,
    channel: str,
    model: str,
    version: int,
    percent: float,
    actor: Actor,
    urgent: bool = False,
    behaviour_gate: dict[str, Any] | None = None,
    phases: list[dict[str, Any]] | None = None,
    report_after: dict[str, Any] | None = None,
) -> ReleaseView:
    """A new release; with ``report_after``, in shadow mode (docs/behaviour.md "Shadow runs")."""
    fleet_row = session.exec(select(Fleet).where(Fleet.name == fleet)).first()
    if fleet_row is None or fleet_row.id is None:
        raise UnknownFleet(f"no fleet {fleet!r}")
    channel_row = session.exec(
        select(Channel).where(Channel.fleet_id == fleet_row.id, Channel.name == channel)
    ).first()
    if channel_row is None or channel_row.id is None:
        raise UnknownChannel(f"fleet {fleet!r} has no channel {channel!r}")
    mv = session.exec(
        select(ModelVersion).where(ModelVersion.name == model, ModelVersion.version == version)
    ).first()
    if mv is None or mv.id is None:
        raise UnknownModelVersion(f"model {model} v{version} was never published")
    # Concurrent changes to one channel (other replicas too) run one after the other from here.
    lock_channel(session, channel_row.id)
    existing = _model_releases(session, channel_row.id, model)
    highest = max((m.version for _, m in existing), default=0)
    if version <= highest:
        raise VersionNotNewer(
            f"{model} v{highest} was already released on {fleet}/{channel}: release versions only go up "
            "(to roll back, publish the old artifacts as a new version: modelsync release rollback)"
        )
    shadow = report_after is not None
    stamp = now()
    _supersede(session, existing, stamp, only_shadows=shadow)
    release = Release(
        channel_id=channel_row.id,
        model_version_id=mv.id,
        model_name=model,
        percent=percent,
        salt=secrets.token_hex(16),
        urgent=urgent,
        state="active",
        mode="shadow" if shadow else "install",
        report_rows=report_after["rows"] if report_after else None,
        report_hours=report_after["hours"] if report_after else None,
        health_since=stamp,
        behaviour_gate=json.dumps(behaviour_gate, sort_keys=True) if behaviour_gate is not None else None,
        phases=json.dumps(phases) if phases else None,
        phase=0,
        phase_since=stamp,
        created_at=stamp,
        updated_at=stamp,
    )
    session.add(release)
    session.flush()
    stored = _reindex(session, channel_row, signer)
    view = ReleaseView(release, fleet_row, channel_row, mv)
    audit.record(
        session, actor=actor, action="create", view=view, index_version=stored.version,
        detail={"percent": percent, "urgent": urgent,
                **({"mode": "shadow", "report_after": report_after} if shadow else {}),
                **({"behaviour_gate": behaviour_gate} if behaviour_gate is not None else {}),
                **({"phases": phases} if phases else {})},
    )
    return view


def _supersede(session: Session, existing: Sequence[tuple[Release, ModelVersion]], stamp: datetime,
               *, only_shadows: bool, keep: Release | None = None) -> None:
    """A new install release supersedes the model's active releases on the channel but the
    newest fully rolled-out install one (the devices outside its bucket fall back to it); a
    new shadow release supersedes only an older shadow, leaving the installs it is compared
    with as they are."""
    full = [(r, m) for r, m in existing if r.state == "active" and r.mode == "install" and r.percent >= 100]
    fallback = max(full, key=lambda p: p[1].version)[0] if full else None
    for r, _ in existing:
        if r.state != "active" or r is fallback or r is keep or (only_shadows and r.mode != "shadow"):
            continue
        r.state = "superseded"
        r.updated_at = stamp
        session.add(r)


def promote_release(
    *, session: Session, signer: IndexSigner, release_id: int, actor: Actor, percent: float | None = None
) -> ReleaseView:
    """A shadow release becomes a normal one with the same salt: the devices that held the
    candidate are the ones in its bucket, and install what they hold without a download."""
    view = _require(session=session, release_id=release_id, lock=True)
    r = view.release
    if r.mode != "shadow":
        raise NotShadow(f"release {release_id} is not a shadow release: nothing to promote")
    if r.state == "superseded":
        raise ReleaseSuperseded(f"release {release_id} is superseded: create a new release")
    if r.state == "halted":
        raise ReleaseHalted(f"release {release_id} was halted ({r.halt_reason}): it cannot be promoted")
    stamp = now()
    _supersede(session, _model_releases(session, view.channel.id or 0, view.model_version.name), stamp,
               only_shadows=False, keep=r)
    before = r.percent
    r.mode = "install"
    r.percent = before if percent is None else percent
    r.health_since = stamp  # both gates judge the installs from here on
    r.updated_at = stamp
    session.add(r)
    session.flush()
    stored = _reindex(session, view.channel, signer)
    audit.record(session, actor=actor, action="promote", view=view, index_version=stored.version,
                 detail={"from": before, "to": r.percent})
    return view


def set_percent(
    *, session: Session, signer: IndexSigner, release_id: int, percent: float, actor: Actor
) -> ReleaseView:
    view = _require(session=session, release_id=release_id, lock=True)
    if view.release.state == "superseded":
        raise ReleaseSuperseded(f"release {release_id} is superseded: create a new release")
    before = view.release.percent
    view.release.percent = percent
    view.release.updated_at = now()
    session.add(view.release)
    session.flush()
    stored = _reindex(session, view.channel, signer)
    audit.record(
        session, actor=actor, action="set_percent", view=view, index_version=stored.version,
        detail={"from": before, "to": percent},
    )
    return view


def halt_release(
    *,
    session: Session,
    signer: IndexSigner,
    release_id: int,
    reason: str,
    actor: Actor,
    by_health_gate: bool = False,
) -> tuple[ReleaseView, bool]:
    """``(view, halted_now)``; halting a halted release changes nothing (``False``)."""
    view = _require(session=session, release_id=release_id, lock=True)
    if view.release.state == "superseded":
        raise ReleaseSuperseded(f"release {release_id} is superseded: nothing to halt")
    result = session.execute(
        update(Release)
        .where(col(Release.id) == release_id, col(Release.state) == "active")
        .values(state="halted", halt_reason=reason, halted_by_health_gate=by_health_gate, updated_at=now())
    )
    halted_now = getattr(result, "rowcount", 0) == 1
    session.refresh(view.release)
    if halted_now:
        stored = _reindex(session, view.channel, signer)
        audit.record(
            session, actor=actor, action="halt", view=view, index_version=stored.version,
            detail={"reason": reason, "by_health_gate": by_health_gate},
        )
        metrics.count_halt("health_gate" if by_health_gate else "operator")
    return view, halted_now


def resume_release(*, session: Session, signer: IndexSigner, release_id: int, actor: Actor) -> ReleaseView:
    view = _require(session=session, release_id=release_id, lock=True)
    r = view.release
    if r.state == "superseded":
        raise ReleaseSuperseded(f"release {release_id} is superseded: create a new release")
    if r.state == "active":
        return view
    newer = [
        other.id
        for other, m in _model_releases(session, view.channel.id or 0, view.model_version.name)
        if other.state == "active" and m.version > view.model_version.version
    ]
    if newer:
        raise NewerReleaseActive(
            f"release {newer[0]} of a newer {view.model_version.name} version is active on "
            f"{view.fleet.name}/{view.channel.name}: halt it first"
        )
    stamp = now()
    r.state = "active"
    r.halt_reason = None
    r.halted_by_health_gate = False
    r.health_since = stamp  # the health gate judges reports made after the resume
    r.updated_at = stamp
    session.add(r)
    session.flush()
    stored = _reindex(session, view.channel, signer)
    audit.record(session, actor=actor, action="resume", view=view, index_version=stored.version)
    return view


# --------------------------------------------------------------------------- status


def devices_in_rollout(device_ids: Sequence[str], *, salt: str, percent: float) -> int:
    """The same bucket the devices compute from the signed index (packager.manifest)."""
    limit = percent * 100
    return sum(1 for d in device_ids if rollout_bucket(salt, d) < limit)


def fleet_reach(session: Session, view: ReleaseView) -> tuple[int, int]:
    """``(registered, in_rollout)``: the fleet's devices, and those inside the release's
    bucket (none while it is not active)."""
    r = view.release
    device_ids = list(session.exec(select(Device.id).where(Device.fleet_id == view.fleet.id)).all())
    in_rollout = devices_in_rollout(device_ids, salt=r.salt, percent=r.percent) if r.state == "active" else 0
    return len(device_ids), in_rollout


def reported_source(data: str | None) -> str:
    """Where an ``installed`` report says the model came from: ``pack`` for an offline pack
    (docs/offline.md), else the network."""
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        return "network"
    return "pack" if isinstance(parsed, dict) and parsed.get("source") == "pack" else "network"


def _installs_from_packs(session: Session, fleet_id: int, model: str, version: int) -> int:
    rows = session.exec(
        select(DeviceEvent.device_id, DeviceEvent.data)
        .join(Device, col(Device.id) == col(DeviceEvent.device_id))
        .where(Device.fleet_id == fleet_id, DeviceEvent.model_name == model,
               DeviceEvent.model_version == version, DeviceEvent.kind == "installed")
    ).all()
    return len({device for device, data in rows if reported_source(data) == "pack"})


def release_status(*, session: Session, release_id: int) -> dict[str, Any]:
    view = _require(session=session, release_id=release_id)
    r, mv = view.release, view.model_version
    fleet_id = view.fleet.id
    registered, in_rollout = fleet_reach(session, view)

    # A device's newest install of a model is its highest installed version: devices refuse
    # a lower version (docs/device.md 3.x), so the database can answer without handing every
    # install report back (10,000 devices: benchmarks/bench_release_reads.py).
    newest = (
        select(DeviceEvent.device_id, func.max(DeviceEvent.model_version).label("version"))
        .join(Device, col(Device.id) == col(DeviceEvent.device_id))
        .where(
            Device.fleet_id == fleet_id, DeviceEvent.model_name == mv.name, DeviceEvent.kind == "installed"
        )
        .group_by(col(DeviceEvent.device_id))
        .subquery()
    )
    by_version = {
        str(version): int(n)
        for version, n in session.exec(
            select(newest.c.version, func.count()).group_by(newest.c.version)
        ).all()
        if version is not None
    }
    installs = int(session.exec(
        select(func.count(distinct(col(DeviceEvent.device_id))))
        .join(Device, col(Device.id) == col(DeviceEvent.device_id))
        .where(Device.fleet_id == fleet_id, DeviceEvent.model_name == mv.name,
               DeviceEvent.model_version == mv.version, DeviceEvent.kind == "installed")
    ).one())
    from_packs = _installs_from_packs(session, fleet_id or 0, mv.name, mv.version)

    failures = session.exec(
        select(DeviceEvent.reason, DeviceEvent.kind)
        .join(Device, col(Device.id) == col(DeviceEvent.device_id))
        .where(
            Device.fleet_id == fleet_id,
            DeviceEvent.model_name == mv.name,
            DeviceEvent.model_version == mv.version,
            col(DeviceEvent.kind).in_(FAILURE_KINDS),
        )
    ).all()
    by_reason = Counter(reason or kind for reason, kind in failures)
    counts = device_counts(session, r, fleet_id or 0, mv.name, mv.version)
    head = newest_head(session, view.channel.id) if view.channel.id is not None else None
    return {
        "release": view.public(),
        "devices_in_rollout": in_rollout,
        "devices_registered": registered,
        "devices_by_version": dict(sorted(by_version.items(), key=lambda kv: int(kv[0]))),
        "installs": installs,
        "installs_from_packs": from_packs,
        "failures_by_reason": dict(sorted(by_reason.items())),
        "reporting_devices": counts.reporting,
        "failing_devices": counts.failing,
        "failure_rate": counts.rate,
        "halted_by_health_gate": r.halted_by_health_gate,
        "index_version": head[0] if head else None,
        "index_expires": aware_utc(head[1]) if head else None,
    }

