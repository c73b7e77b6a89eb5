"""What models do in the field, from devices' ``behaviour`` reports (docs/behaviour.md): the
report's schema and the checks that need the database, the sum over a fleet per model
version, and the behaviour gate that halts a release whose candidate behaves unlike the
incumbent (or, with no incumbent yet, unlike the reference the manifest signs).

Sums are exact integers (rows, anomalies, histogram counts); latency is summarised as the
median of the reports' p50s and the nearest-rank 95th percentile of their p95s (a device
sends percentiles, not samples)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator
from sqlmodel import Session, col, select

from packager.behaviour import MAX_BINS, BehaviourProfile, nearest_rank, psi
from sync_service.audit import Actor
from sync_service.bundles import stored_manifest
from sync_service.crud_releases import ReleaseView, get_release, halt_release
from sync_service.errors import Unprocessable
from sync_service.health_gate import serialize_judgement, window_start
from sync_service.index import IndexSigner, aware_utc
from sync_service.models import Channel, Device, DeviceEvent, ModelVersion, Release
from sync_service.shadow import fleet_reports as shadow_reports
from sync_service.shadow import judge as judge_shadow
from sync_service.shadow import summarize as summarize_shadow
from sync_service.storage import Storage

BEHAVIOUR_GATE = Actor(None, "behaviour-gate")
# A judgement sums every report in the release's window, so once a release has passed with
# enough data it is judged again at most this often per replica, not on every batch (2,000
# devices' batches each re-summing the whole window starved the service). While it is still
# waiting for devices and rows, the window is small and every batch is judged.
REJUDGE_AFTER_PASS_S = 10.0
_passed_at: dict[str, float] = {}  # by the release's salt: random, unique across databases
COUNT_MAX = 10**9
LATENCY_MAX_MS = 600_000.0
Count = Annotated[StrictInt, Field(ge=0, le=COUNT_MAX)]
Millis = Annotated[float, Field(ge=0, le=LATENCY_MAX_MS, allow_inf_nan=False)]


class Latency(BaseModel):
    model_config = ConfigDict(extra="forbid")
    p50: Millis
    p95: Millis


class BehaviourData(BaseModel):
    """The ``data`` of a ``behaviour`` report: one model version's window on one device."""

    model_config = ConfigDict(extra="forbid")
    since: datetime = Field(description="the window's start; the event's `at` is its end")
    rows: Annotated[StrictInt, Field(ge=1, le=COUNT_MAX)]
    anomalies: Count
    calls: Annotated[StrictInt, Field(ge=1, le=COUNT_MAX)]
    histogram: list[Count] = Field(
        max_length=MAX_BINS, description="counts per bin of the manifest's score_edges; [] when it has none"
    )
    latency_ms: Latency
    provider: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")

    @model_validator(mode="after")
    def _consistent(self) -> BehaviourData:
        if self.anomalies > self.rows:
            raise ValueError(f"anomalies ({self.anomalies}) exceed rows ({self.rows})")
        if self.histogram and sum(self.histogram) != self.rows:
            raise ValueError(f"the histogram counts {sum(self.histogram)} rows, the report {self.rows}")
        if self.latency_ms.p50 > self.latency_ms.p95:
            raise ValueError("latency p50 is above p95")
        return self


class GateBounds(BaseModel):
    """A release's behaviour gate: judged once ``min_devices`` devices have sent
    ``min_rows`` rows on the candidate since the release started (or resumed)."""

    model_config = ConfigDict(extra="forbid")
    max_rate_ratio: float = Field(
        2.0, gt=1, le=1000, allow_inf_nan=False,
        description="halt when the candidate's anomaly rate is above this many times the baseline's, "
        "or below its inverse",
    )
    max_psi: float = Field(0.25, gt=0, le=100, allow_inf_nan=False,
                           description="halt when the score histograms' PSI is above this")
    min_agreement: float = Field(0.9, ge=0, le=1, allow_inf_nan=False,
                                 description="a shadow release halts when its label agreement with the "
                                 "active model is below this")
    min_rank_correlation: float | None = Field(
        None, ge=-1, le=1, allow_inf_nan=False,
        description="a shadow release halts when its score rank correlation is below this; null: not judged")
    min_devices: int = Field(10, ge=1, le=1_000_000)
    min_rows: int = Field(1000, ge=1, le=COUNT_MAX)


# --------------------------------------------------------------------------- manifests

_profiles: dict[str, BehaviourProfile | None] = {}
_lock = threading.Lock()


def profile_of(storage: Storage, mv: ModelVersion) -> BehaviourProfile | None:
    """The manifest's behaviour profile (None for a bundle written before profiles), by
    manifest hash: content-addressed, so it never goes stale."""
    with _lock:
        if mv.manifest_sha256 in _profiles:
            return _profiles[mv.manifest_sha256]
    found = stored_manifest(storage, mv.manifest_sha256)[0].behaviour
    with _lock:
        if len(_profiles) > 1024:
            _profiles.clear()
        _profiles[mv.manifest_sha256] = found
    return found


def check_reports(session: Session, storage: Storage, device_id: str, events: Sequence[Any]) -> None:
    """A batch's ``behaviour`` reports, against what only the database knows: the device
    installed that version (before, or earlier in this batch), and the histogram has the
    manifest's bin count. Raises Unprocessable for the first that does not hold: the batch
    is refused whole, nothing stored."""
    installed_here: set[tuple[str, int]] = set()
    bins: dict[tuple[str, int], int] = {}  # checked versions → their manifest's bin count
    for e in events:
        if e.kind == "installed" and e.model is not None and e.version is not None:
            installed_here.add((e.model, e.version))
        if e.kind != "behaviour":
            continue
        assert e.model is not None and e.version is not None and e.data is not None  # the schema's
        key = (e.model, e.version)
        if key not in bins:
            if key not in installed_here and not _installed_before(session, device_id, *key):
                raise Unprocessable(
                    f"behaviour report for {e.model} v{e.version}, which device {device_id} never reported "
                    "installing", code="behaviour_not_installed",
                )
            mv = session.exec(
                select(ModelVersion).where(ModelVersion.name == e.model, ModelVersion.version == e.version)
            ).first()
            if mv is None:
                raise Unprocessable(f"no model {e.model} v{e.version}", code="behaviour_not_installed")
            prof = profile_of(storage, mv)
            bins[key] = len(prof.score_edges) + 1 if prof is not None else 0
        want = bins[key]
        got = len(e.data["histogram"])
        if got != want:
            raise Unprocessable(
                f"behaviour report for {e.model} v{e.version} has {got} histogram bins, its manifest {want}",
                code="wrong_bin_count",
            )


def _installed_before(session: Session, device_id: str, model: str, version: int) -> bool:
    return session.exec(
        select(DeviceEvent.event_id).where(
            DeviceEvent.device_id == device_id, DeviceEvent.kind == "installed",
            DeviceEvent.model_name == model, DeviceEvent.model_version == version,
        ).limit(1)
    ).first() is not None


# --------------------------------------------------------------------------- sums


@dataclass(frozen=True)
class VersionBehaviour:
    version: int
    devices: int
    reports: int
    rows: int
    anomalies: int
    histogram: list[int] | None  # None: no report carried one
    latency_p50_ms: float
    latency_p95_ms: float
    providers: dict[str, int]  # provider → devices whose newest report ran on it

    @property
    def anomaly_rate(self) -> float:
        return self.anomalies / self.rows if self.rows else 0.0

    def public(self) -> dict[str, Any]:
        return {
            "version": self.version, "devices": self.devices, "reports": self.reports, "rows": self.rows,
            "anomalies": self.anomalies, "anomaly_rate": self.anomaly_rate, "histogram": self.histogram,
            "latency_p50_ms": self.latency_p50_ms, "latency_p95_ms": self.latency_p95_ms,
            "providers": self.providers,
        }


def summarize(version: int, reports: Sequence[tuple[str, dict[str, Any]]]) -> VersionBehaviour:
    """The fleet's sum for one version from ``(device_id, data)`` pairs, oldest first."""
    rows = anomalies = 0
    hist: list[int] | None = None
    p50s: list[float] = []
    p95s: list[float] = []
    newest_provider: dict[str, str] = {}
    for device_id, data in reports:
        rows += int(data["rows"])
        anomalies += int(data["anomalies"])
        counts = data.get("histogram") or []
        if counts:
            hist = [a + b for a, b in zip(hist, counts, strict=True)] if hist is not None else list(counts)
        p50s.append(float(data["latency_ms"]["p50"]))
        p95s.append(float(data["latency_ms"]["p95"]))
        newest_provider[device_id] = str(data["provider"])
    return VersionBehaviour(
        version=version, devices=len(newest_provider), reports=len(reports), rows=rows, anomalies=anomalies,
        histogram=hist, latency_p50_ms=nearest_rank(p50s, 0.5), latency_p95_ms=nearest_rank(p95s, 0.95),
        providers=dict(sorted(Counter(newest_provider.values()).items())),
    )


def fleet_reports(
    session: Session, fleet_id: int, model: str, since: datetime
) -> dict[int, list[tuple[str, dict[str, Any]]]]:
    """Every version's behaviour reports in the fleet received since ``since``, oldest first."""
    found = session.exec(
        select(DeviceEvent.model_version, DeviceEvent.device_id, DeviceEvent.data)
        .join(Device, col(Device.id) == col(DeviceEvent.device_id))
        .where(Device.fleet_id == fleet_id, DeviceEvent.kind == "behaviour", DeviceEvent.model_name == model,
               col(DeviceEvent.received_at) >= since)
        .order_by(col(DeviceEvent.received_at), col(DeviceEvent.event_id))
    ).all()
    by_version: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for version, device_id, data in found:
        if version is not None and data:
            by_version.setdefault(version, []).append((device_id, json.loads(data)))
    return by_version


@dataclass(frozen=True)
class Judgement:
    baseline: str  # "incumbent vN" or "reference"
    rate_ratio: float | None
    psi: float | None
    breach: str | None  # the halt reason, or None
    waiting: str | None  # why it is not judged yet, or None


def judge(
    candidate: VersionBehaviour, incumbent: VersionBehaviour | None, reference: BehaviourProfile | None,
    bounds: GateBounds,
) -> Judgement:
    """Pure: the candidate against the incumbent on the same fleet and window when the
    incumbent has enough rows, else against the manifest's reference."""
    if incumbent is not None and incumbent.rows >= bounds.min_rows:
        label, base_rate = f"incumbent v{incumbent.version}", incumbent.anomaly_rate
        base_hist: Sequence[float] | None = incumbent.histogram
    elif reference is not None:
        label, base_rate, base_hist = "reference", reference.anomaly_rate, reference.reference_histogram
    else:
        return Judgement("none", None, None, None, "no incumbent with enough rows and no reference profile")
    ratio = candidate.anomaly_rate / max(base_rate, 1e-3)
    index = (psi(candidate.histogram, base_hist) if candidate.histogram is not None and base_hist is not None
             and len(candidate.histogram) == len(base_hist) else None)
    if candidate.devices < bounds.min_devices or candidate.rows < bounds.min_rows:
        return Judgement(label, ratio, index, None,
                         f"{candidate.devices} of {bounds.min_devices} devices, {candidate.rows:,} of "
                         f"{bounds.min_rows:,} rows")
    problems = []
    if ratio > bounds.max_rate_ratio or ratio < 1 / bounds.max_rate_ratio:
        problems.append(f"anomaly rate {candidate.anomaly_rate:.1%} against {base_rate:.1%} for the {label} "
                        f"(×{ratio:.2f}, bound ×{bounds.max_rate_ratio:g})")
    if index is not None and index > bounds.max_psi:
        problems.append(f"score PSI {index:.3f} against the {label} (bound {bounds.max_psi:g})")
    breach = None
    if problems:
        breach = (f"behaviour gate: {'; '.join(problems)}, over {candidate.devices} devices and "
                  f"{candidate.rows:,} rows")
    return Judgement(label, ratio, index, breach, None)


def release_behaviour(session: Session, storage: Storage, view: ReleaseView) -> dict[str, Any]:
    """The release's candidate and incumbent in the fleet since the release (re)started, and
    the gate's judgement: GET /v1/releases/{id}/behaviour."""
    r, mv = view.release, view.model_version
    since = window_start(r)
    by_version = fleet_reports(session, view.fleet.id or 0, mv.name, since)
    candidate = summarize(mv.version, by_version.get(mv.version, []))
    # The incumbent is what the candidate replaces: a lower version released on this channel
    # and never halted. A halted bad version still reporting from the devices it reached
    # must not become the yardstick of the good one that follows it.
    released = session.exec(
        select(ModelVersion.version, Release.state)
        .join(Release, col(Release.model_version_id) == col(ModelVersion.id))
        .where(Release.channel_id == r.channel_id, Release.model_name == mv.name)
    ).all()
    halted = {v for v, state in released if state == "halted"}
    fair = {v for v, _ in released} - halted
    older = sorted(v for v in by_version if v < mv.version and v in fair)
    incumbent = summarize(older[-1], by_version[older[-1]]) if older else None
    reference = profile_of(storage, mv)
    bounds = GateBounds.model_validate_json(r.behaviour_gate) if r.behaviour_gate else None
    verdict = judge(candidate, incumbent, reference, bounds or GateBounds())
    gate = {
        "bounds": bounds.model_dump() if bounds else None, "baseline": verdict.baseline,
        "rate_ratio": verdict.rate_ratio, "psi": verdict.psi,
        "breach": verdict.breach if bounds else None, "waiting": verdict.waiting,
    }
    shadow = None
    if r.report_rows is not None:  # a shadow release, or one promoted from shadow
        shadow = summarize_shadow(shadow_reports(session, view.fleet.id or 0, mv.name, mv.version, since))
        if r.mode == "shadow":  # judged on the rows both models scored, not on installs
            b = bounds or GateBounds()
            found = judge_shadow(shadow, max_rate_ratio=b.max_rate_ratio, min_agreement=b.min_agreement,
                                 min_rank_correlation=b.min_rank_correlation, min_devices=b.min_devices,
                                 min_rows=b.min_rows)
            gate.update(baseline="active model (shadow)", rate_ratio=found.rate_ratio, psi=None,
                        breach=found.breach if bounds else None, waiting=found.waiting)
    return {
        "release_id": r.id, "model": mv.name, "version": mv.version, "mode": r.mode,
        "since": aware_utc(since),
        "candidate": candidate.public(),
        "incumbent": incumbent.public() if incumbent else None,
        "reference": {"anomaly_rate": reference.anomaly_rate, "histogram": reference.reference_histogram,
                      "score_edges": reference.score_edges} if reference else None,
        "shadow": shadow.public() if shadow else None,
        "gate": gate,
    }


def apply_gate(
    *, session: Session, storage: Storage, signer: IndexSigner, fleet_id: int, events: Sequence[Any]
) -> list[ReleaseView]:
    """Halt every active release with a behaviour gate whose candidate this batch reported
    on and which now breaches its bounds."""
    touched = {(e.model, e.version) for e in events
               if e.kind in ("behaviour", "shadow") and e.model is not None}
    if not touched:
        return []
    releases = session.exec(
        select(Release, ModelVersion)
        .join(Channel, col(Channel.id) == col(Release.channel_id))
        .join(ModelVersion, col(ModelVersion.id) == col(Release.model_version_id))
        .where(Channel.fleet_id == fleet_id, Release.state == "active",
               col(Release.behaviour_gate).is_not(None))
        .order_by(col(Release.id))
    ).all()
    halted = []
    for release, mv in releases:
        if (mv.name, mv.version) not in touched or release.id is None:
            continue
        passed = _passed_at.get(release.salt)
        if passed is not None and time.monotonic() - passed < REJUDGE_AFTER_PASS_S:
            continue
        serialize_judgement(session, release)  # one judge at a time per release, as the health gate
        view = get_release(session=session, release_id=release.id)
        if view is None or view.release.state != "active":
            continue
        summary = release_behaviour(session, storage, view)
        breach = summary["gate"]["breach"]
        if breach is None and summary["gate"]["waiting"] is None:
            _passed_at[release.salt] = time.monotonic()
        else:
            _passed_at.pop(release.salt, None)
        if breach:
            changed, now_halted = halt_release(session=session, signer=signer, release_id=release.id,
                                               reason=breach, actor=BEHAVIOUR_GATE)
            if now_halted:
                halted.append(changed)
    return halted
