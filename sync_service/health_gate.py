"""Rollout health gate: a release whose reporting devices fail too often halts itself.

Among the fleet's devices that reported on a release's model version (``installed``,
``install_failed`` or ``golden_failed``) since the release started (or was last resumed),
when at least ``min_devices`` reported and the share of devices with a failure reaches
``failure_rate``, the release is halted, the reason records the numbers, and a new index
is signed without it (docs/protocol.md, "Health gate").

Only failures of verified bytes count. ``transfer_failed`` (bytes cut, undecodable, of the
wrong length or hash, after the device's retry) is not an outcome: anyone on the path
between some devices and the service can cause it without a key, and it says nothing about
the model (docs/security.md, "A path attacker halting a rollout"). Older clients report
the same failures as ``install_failed`` with these reasons; they are not counted either.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import distinct, func, or_, text
from sqlmodel import Session, col, select

from sync_service.models import Channel, Device, DeviceEvent, ModelVersion, Release, ReportKind

FAILURE_KINDS: tuple[ReportKind, ...] = ("install_failed", "golden_failed")
OUTCOME_KINDS: tuple[ReportKind, ...] = ("installed", *FAILURE_KINDS)
# A device that cannot take the artifact at all (onnxruntime older than the one that wrote
# it, no artifact for its platform) says nothing about the model's health: not counted.
INCOMPATIBLE_REASONS = ("runtime_too_old", "no_artifact_for_target")
# Transport failures (the device's error codes, docs/device.md "Error classes"):
TRANSPORT_REASONS = ("hash_mismatch", "length_mismatch", "download", "slow_retrieval")
NOT_COUNTED_REASONS = (*INCOMPATIBLE_REASONS, *TRANSPORT_REASONS)


@dataclass(frozen=True)
class Verdict:
    reporting: int
    failing: int
    halt: bool

    @property
    def rate(self) -> float:
        return self.failing / self.reporting if self.reporting else 0.0

    def reason(self, failure_rate: float) -> str:
        return (
            f"health gate: {self.failing} of {self.reporting} reporting devices failed "
            f"({self.rate:.1%} >= {failure_rate:.1%})"
        )


def judge(reporting: int, failing: int, *, failure_rate: float, min_devices: int) -> Verdict:
    """Pure decision; the comparison is exact in integers so 1 of 20 at 5% halts."""
    halt = reporting >= min_devices and reporting > 0 and failing >= failure_rate * reporting - 1e-9
    return Verdict(reporting=reporting, failing=failing, halt=halt)


# pg_advisory_xact_lock(key1, key2) namespace: key2 is the release id.
_GATE_LOCK_SPACE = 0x6D73_6867  # "mshg"


def serialize_judgement(session: Session, release: Release) -> None:
    """Hold the release's health-gate lock until the transaction ends, then re-read it.

    "Count the failures, decide to halt" must see every batch committed before it: two
    replicas judging at once each counted only their own uncommitted events, so a crossing
    split between them halted nothing. On PostgreSQL a transaction-scoped advisory lock per
    release queues judges (the next one's count, a new READ COMMITTED statement, sees the
    previous batch). Not a row lock on the release: release changes lock the channel first
    and the release row second, a halt here does the same after the judgement, and an
    advisory lock that nothing else takes cannot close a cycle with either. SQLite needs
    nothing: the batch's insert already holds the database's single write lock.
    """
    assert release.id is not None
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(:space, :release)"),
            {"space": _GATE_LOCK_SPACE, "release": release.id},
        )
    session.refresh(release)  # a judge before us may have halted it, an operator resumed it


def window_start(release: Release) -> datetime:
    return release.health_since or release.created_at


def device_counts(session: Session, release: Release, fleet_id: int, model: str, version: int) -> Verdict:
    """Reporting and failing devices for one release (no decision: thresholds not applied)."""
    base = (
        select(func.count(distinct(col(DeviceEvent.device_id))))
        .join(Device, col(Device.id) == col(DeviceEvent.device_id))
        .where(
            Device.fleet_id == fleet_id,
            DeviceEvent.model_name == model,
            DeviceEvent.model_version == version,
            col(DeviceEvent.received_at) >= window_start(release),
            or_(col(DeviceEvent.reason).is_(None), col(DeviceEvent.reason).not_in(NOT_COUNTED_REASONS)),
        )
    )
    reporting = int(session.exec(base.where(col(DeviceEvent.kind).in_(OUTCOME_KINDS))).one())
    failing = int(session.exec(base.where(col(DeviceEvent.kind).in_(FAILURE_KINDS))).one())
    return Verdict(reporting=reporting, failing=failing, halt=False)


def releases_touched(
    session: Session, fleet_id: int, outcomes: Iterable[tuple[str, int]]
) -> list[tuple[Release, Channel, ModelVersion]]:
    """Active releases in the fleet for the (model, version) pairs a batch reported on."""
    pairs = sorted(set(outcomes))
    if not pairs:
        return []
    found: list[tuple[Release, Channel, ModelVersion]] = []
    for model, version in pairs:
        stmt = (
            select(Release, Channel, ModelVersion)
            .join(Channel, col(Channel.id) == col(Release.channel_id))
            .join(ModelVersion, col(ModelVersion.id) == col(Release.model_version_id))
            .where(
                Channel.fleet_id == fleet_id,
                Release.state == "active",
                ModelVersion.name == model,
                ModelVersion.version == version,
            )
            .order_by(col(Release.id))
        )
        found.extend((r, c, mv) for r, c, mv in session.exec(stmt).all())
    # One global order (release id): halts lock their channel, so concurrent batches must
    # take those locks in the same order or they could deadlock.
    return sorted(found, key=lambda t: t[0].id or 0)
