"""Shadow runs, the service's side (docs/behaviour.md "Shadow runs"): the ``shadow`` report's
schema and the check that needs the database, the fleet's sum of a candidate's agreement
windows, and the judgement of a shadow release on them.

Devices in a shadow release's bucket run the candidate beside their active model on the same
rows, so the comparison needs no incumbent window of its own: each report carries both sides."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator
from sqlmodel import Session, col, select

from sync_service.errors import Unprocessable
from sync_service.models import Channel, Device, DeviceEvent, ModelVersion, Release

COUNT_MAX = 10**9
RANK_PAIRS_MAX = 2000  # the pairs a device keeps per window for the rank correlation
Count = Annotated[StrictInt, Field(ge=0, le=COUNT_MAX)]


class ShadowData(BaseModel):
    """The ``data`` of a ``shadow`` report: one agreement window on one device."""

    model_config = ConfigDict(extra="forbid")
    since: datetime = Field(description="the window's first row; the event's `at` is its end")
    active_version: Annotated[StrictInt, Field(ge=1)]
    rows: Annotated[StrictInt, Field(ge=1, le=COUNT_MAX)]
    agree: Count
    active_anomalies: Count
    shadow_anomalies: Count
    rank_pairs: Annotated[StrictInt, Field(ge=0, le=RANK_PAIRS_MAX)]
    rank_correlation: Annotated[float, Field(ge=-1, le=1, allow_inf_nan=False)] | None

    @model_validator(mode="after")
    def _consistent(self) -> ShadowData:
        for name in ("agree", "active_anomalies", "shadow_anomalies", "rank_pairs"):
            if getattr(self, name) > self.rows:
                raise ValueError(f"{name} ({getattr(self, name)}) exceeds rows ({self.rows})")
        return self


def check_reports(session: Session, fleet_id: int, events: Sequence[Any]) -> None:
    """A batch's ``shadow`` reports, against the database: the candidate was released in
    shadow mode in the device's fleet, above the version it ran beside. Raises Unprocessable
    for the first that does not hold: the batch is refused whole."""
    known: set[tuple[str, int]] = set()
    for e in events:
        if e.kind != "shadow":
            continue
        assert e.model is not None and e.version is not None and e.data is not None  # the schema's
        if e.data["active_version"] >= e.version:
            raise Unprocessable(
                f"shadow report for {e.model} v{e.version} beside v{e.data['active_version']}: a shadow "
                "candidate is above the version it runs beside", code="validation_error",
            )
        key = (e.model, e.version)
        if key in known:
            continue
        found = session.exec(
            select(Release.id)
            .join(Channel, col(Channel.id) == col(Release.channel_id))
            .join(ModelVersion, col(ModelVersion.id) == col(Release.model_version_id))
            .where(Channel.fleet_id == fleet_id, ModelVersion.name == e.model,
                   ModelVersion.version == e.version, col(Release.report_rows).is_not(None))
            .limit(1)
        ).first()
        if found is None:
            raise Unprocessable(
                f"shadow report for {e.model} v{e.version}, which was never released in shadow mode in "
                "this device's fleet", code="shadow_not_released",
            )
        known.add(key)


@dataclass(frozen=True)
class ShadowSummary:
    devices: int
    reports: int
    rows: int
    agree: int
    active_anomalies: int
    shadow_anomalies: int
    rank_pairs: int
    rank_sum: float  # Σ correlation × rank_pairs over reports with a correlation

    @property
    def agreement(self) -> float | None:
        return self.agree / self.rows if self.rows else None

    @property
    def active_anomaly_rate(self) -> float | None:
        return self.active_anomalies / self.rows if self.rows else None

    @property
    def shadow_anomaly_rate(self) -> float | None:
        return self.shadow_anomalies / self.rows if self.rows else None

    @property
    def rank_correlation(self) -> float | None:
        return self.rank_sum / self.rank_pairs if self.rank_pairs else None

    def public(self) -> dict[str, Any]:
        return {
            "devices": self.devices, "reports": self.reports, "rows": self.rows, "agreement": self.agreement,
            "active_anomaly_rate": self.active_anomaly_rate, "shadow_anomaly_rate": self.shadow_anomaly_rate,
            "rank_correlation": self.rank_correlation,
        }


def summarize(reports: Sequence[tuple[str, dict[str, Any]]]) -> ShadowSummary:
    """The fleet's sum over ``(device_id, data)`` pairs; the rank correlation is the mean of
    the reports' correlations weighted by the pairs each was computed on."""
    rows = agree = active = shadow = pairs = 0
    rank_sum = 0.0
    for _, data in reports:
        rows += int(data["rows"])
        agree += int(data["agree"])
        active += int(data["active_anomalies"])
        shadow += int(data["shadow_anomalies"])
        if data.get("rank_correlation") is not None and data["rank_pairs"]:
            pairs += int(data["rank_pairs"])
            rank_sum += float(data["rank_correlation"]) * int(data["rank_pairs"])
    devices = len({d for d, _ in reports})
    return ShadowSummary(devices, len(reports), rows, agree, active, shadow, pairs, rank_sum)


def fleet_reports(
    session: Session, fleet_id: int, model: str, version: int, since: datetime
) -> list[tuple[str, dict[str, Any]]]:
    """The candidate's shadow reports in the fleet received since ``since``, oldest first."""
    found = session.exec(
        select(DeviceEvent.device_id, DeviceEvent.data)
        .join(Device, col(Device.id) == col(DeviceEvent.device_id))
        .where(Device.fleet_id == fleet_id, DeviceEvent.kind == "shadow", DeviceEvent.model_name == model,
               DeviceEvent.model_version == version, col(DeviceEvent.received_at) >= since)
        .order_by(col(DeviceEvent.received_at), col(DeviceEvent.event_id))
    ).all()
    return [(device_id, json.loads(data)) for device_id, data in found if data]


@dataclass(frozen=True)
class ShadowJudgement:
    rate_ratio: float | None
    breach: str | None
    waiting: str | None


def judge(
    s: ShadowSummary, *, max_rate_ratio: float, min_agreement: float, min_rank_correlation: float | None,
    min_devices: int, min_rows: int,
) -> ShadowJudgement:
    """Pure: the candidate against the active model on the same rows."""
    ratio = (s.shadow_anomalies / max(s.active_anomalies, s.rows / 1000)) if s.rows else None
    if s.devices < min_devices or s.rows < min_rows:
        return ShadowJudgement(ratio, None, f"{s.devices} of {min_devices} devices, {s.rows:,} of "
                                            f"{min_rows:,} shadow rows")
    assert ratio is not None and s.agreement is not None
    problems = []
    if ratio > max_rate_ratio or ratio < 1 / max_rate_ratio:
        problems.append(f"anomaly rate {s.shadow_anomaly_rate:.1%} against {s.active_anomaly_rate:.1%} for "
                        f"the active model on the same rows (×{ratio:.2f}, bound ×{max_rate_ratio:g})")
    if s.agreement < min_agreement:
        problems.append(f"label agreement {s.agreement:.1%} (floor {min_agreement:.0%})")
    corr = s.rank_correlation
    if min_rank_correlation is not None and corr is not None and corr < min_rank_correlation:
        problems.append(f"score rank correlation {corr:.3f} (floor {min_rank_correlation:g})")
    breach = None
    if problems:
        breach = (f"behaviour gate (shadow): {'; '.join(problems)}, over {s.devices} devices and "
                  f"{s.rows:,} rows")
    return ShadowJudgement(ratio, breach, None)
