"""A release's adoption over time, from device reports: at each of N moments between the
release's creation and now, how many of its fleet's devices had installed its version, how
many had last reported a failure on it (by reason), how many were in the rollout bucket but
had done neither yet (downloading, or not synced since), and how many were outside it.

Times are when the service received each report (``received_at``), not the device's clock:
a device cannot move a point of the chart by lying about its time, and reports queued
offline count when they arrive. The bucket is the release's current percent: a change of
percent redraws the whole chart's split between pending and outside (the audit log,
sync_service/audit.py, says when the percent changed)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from packager.manifest import format_time
from sync_service.crud_releases import ReleaseView, fleet_reach
from sync_service.health_gate import FAILURE_KINDS, OUTCOME_KINDS
from sync_service.index import aware_utc
from sync_service.models import Device, DeviceEvent, now

POINTS_MAX = 500


def moments(start: datetime, end: datetime, points: int) -> list[datetime]:
    """``points`` evenly spaced moments from ``start`` to ``end``, both included."""
    if points == 1 or end <= start:
        return [end]
    step = (end - start) / (points - 1)
    return [start + step * i for i in range(points - 1)] + [end]


def adoption(session: Session, view: ReleaseView, *, points: int) -> dict[str, Any]:
    r, mv = view.release, view.model_version
    registered, in_rollout = fleet_reach(session, view)
    rows = session.exec(
        select(DeviceEvent.device_id, DeviceEvent.kind, DeviceEvent.reason, DeviceEvent.received_at)
        .join(Device, col(Device.id) == col(DeviceEvent.device_id))
        .where(
            Device.fleet_id == view.fleet.id,
            DeviceEvent.model_name == mv.name,
            DeviceEvent.model_version == mv.version,
            col(DeviceEvent.kind).in_(OUTCOME_KINDS),
        )
        .order_by(col(DeviceEvent.received_at), col(DeviceEvent.event_id))
    ).all()
    start = aware_utc(r.created_at)
    end = max([now(), *(aware_utc(at) for *_, at in rows)])
    series = []
    installed: set[str] = set()
    failed: dict[str, str] = {}  # device → reason of its latest failure, until it installs
    i = 0
    for moment in moments(start, end, points):
        while i < len(rows) and aware_utc(rows[i][3]) <= moment:
            device_id, kind, reason, _ = rows[i]
            if kind == "installed":
                installed.add(device_id)
                failed.pop(device_id, None)
            elif kind in FAILURE_KINDS and device_id not in installed:
                failed[device_id] = reason or kind
            i += 1
        failures = Counter(failed.values())
        settled = len(installed) + len(failed)
        series.append({
            "at": format_time(moment),
            "installed": len(installed),
            "failed": dict(sorted(failures.items())),
            "pending": max(in_rollout - settled, 0),
            "outside": registered - max(in_rollout, settled),
        })
    return {
        "release_id": r.id,
        "model": mv.name,
        "version": mv.version,
        "percent": r.percent,
        "state": r.state,
        "devices_registered": registered,
        "devices_in_rollout": in_rollout,
        "points": series,
    }

