"""Releases per fleet and channel (release scope). Every change commits together with the
channel's next signed index (sync_service/crud_releases.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool, model_validator

from packager.manifest import ReportAfter
from sync_service import adoption, behaviour, crud_releases
from sync_service.api.deps import (
    TEXT_LINE,
    AnyPublisherDep,
    Principal,
    ReleaseDep,
    SessionDep,
    SettingsDep,
    SignerDep,
    StorageDep,
    Version,
)
from sync_service.api.openapi import refusals
from sync_service.audit import Actor
from sync_service.behaviour import GateBounds
from sync_service.crud_releases import ReleaseView
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
from sync_service.index import cache_for
from sync_service.models import ReleaseMode, ReleaseState
from sync_service.phases import Phase, Schedule

router = APIRouter(prefix="/v1/releases", tags=["releases"])

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
ReleaseId = Annotated[int, Path(ge=1, le=2**31 - 1)]
# JSON numbers and booleans as the schema says, strictly: lax pydantic took `false` for 0%
# and "50" for 50%. (1.0 is a JSON integer, as JSON Schema counts: deps.Version.)
Percent = Annotated[float, Strict(), Field(ge=0, le=100, allow_inf_nan=False)]


class ReleaseCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fleet: Name
    channel: Name
    model: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    version: Version
    percent: Percent
    urgent: StrictBool = False
    behaviour_gate: GateBounds | None = Field(
        None, description="halt the rollout when the candidate's field behaviour leaves these bounds"
    )
    phases: list[Phase] | None = Field(
        None, min_length=2, max_length=10,
        description="a phased ramp: the service moves to each next percent once the phase has been "
        "held for hold_s and the gates pass; `percent` must be the first phase's",
    )
    mode: ReleaseMode = Field(
        "install", description="shadow: devices in the bucket hold the candidate and run it beside their "
        "active model, acting on none of its answers, and report agreement (docs/behaviour.md)",
    )
    report_after: ReportAfter | None = Field(
        None, description="a shadow release's agreement window: a report after this many rows or hours "
        "(default 1000 rows, 24 h)",
    )

    @model_validator(mode="after")
    def _schedule(self) -> ReleaseCreate:
        if self.mode == "shadow":
            if self.urgent or self.phases is not None:
                raise ValueError("a shadow release takes neither urgent nor phases: promote it, then ramp")
            if self.report_after is None:
                self.report_after = ReportAfter(rows=1000, hours=24.0)
        elif self.report_after is not None:
            raise ValueError("report_after is for shadow releases (mode: shadow)")
        if self.phases is not None:
            Schedule(phases=self.phases)  # rising percents
            if self.percent != self.phases[0].percent:
                raise ValueError(
                    f"percent {self.percent:g} is not the first phase's {self.phases[0].percent:g}")
        return self


class PhaseState(BaseModel):
    phase: int = Field(description="1-based")
    of: int
    percent: float
    since: datetime
    phases: list[Phase]
    next_percent: float | None
    next_judgement: datetime | None = Field(description="when the hold ends and the gates are judged")
    done: bool


class PercentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    percent: Percent


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    percent: Percent | None = Field(None, description="the percent once promoted; absent: the shadow's")


class HaltRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=1000, pattern=TEXT_LINE)


class ReleasePublic(BaseModel):
    id: int
    fleet: str
    channel: str
    model: str
    version: int
    percent: float
    salt: str
    urgent: bool
    mode: ReleaseMode
    report_after: ReportAfter | None = Field(description="set on a release created in shadow mode")
    state: ReleaseState
    halt_reason: str | None
    halted_by_health_gate: bool
    behaviour_gate: GateBounds | None
    schedule: PhaseState | None
    created: datetime
    updated: datetime


class ReleaseStatus(BaseModel):
    release: ReleasePublic
    devices_in_rollout: int = Field(description="registered devices of the fleet inside the rollout bucket")
    devices_registered: int
    devices_by_version: dict[str, int] = Field(description="version → devices whose newest install it is")
    installs: int = Field(description="devices that reported installing this version")
    installs_from_packs: int = Field(
        0, description="of those, devices that installed it from an offline pack (docs/offline.md)"
    )
    failures_by_reason: dict[str, int]
    reporting_devices: int = Field(description="devices reporting on this release since it (re)started")
    failing_devices: int
    failure_rate: float
    halted_by_health_gate: bool
    index_version: int | None = Field(description="the channel's newest signed index version")
    index_expires: datetime | None = Field(description="when that index expires unless re-signed")
    gate_failure_rate: float = Field(description="the health gate halts at this failure rate…")
    gate_min_devices: int = Field(description="…once this many devices report on the release")


def _actor(user: Principal) -> Actor:
    return Actor(user.token_id, user.name)


def _public(view: ReleaseView) -> ReleasePublic:
    return ReleasePublic.model_validate(view.public())


def _committed(request: Request, session: SessionDep, view: ReleaseView) -> ReleasePublic:
    session.commit()
    if view.channel.id is not None:
        cache_for(request.app.state).forget_channel(view.channel.id)
    session.refresh(view.release)
    return _public(view)


UNKNOWN: dict[type[Exception], str] = {UnknownRelease: "no such release"}
CHANGE = refusals({**UNKNOWN, ReleaseSuperseded: "the release is superseded"})
CREATE = refusals(
    {
        UnknownFleet: "unknown fleet",
        UnknownChannel: "unknown channel",
        UnknownModelVersion: "unknown model version",
        VersionNotNewer: "a release of the same or a newer version exists in the channel",
    }
)
RESUME = refusals(
    {
        **UNKNOWN,
        ReleaseSuperseded: "the release is superseded",
        NewerReleaseActive: "a newer release of the model is active",
    }
)


@router.post("", status_code=status.HTTP_201_CREATED, responses=CREATE)
def create_release(
    body: ReleaseCreate, request: Request, session: SessionDep, signer: SignerDep, user: ReleaseDep
) -> ReleasePublic:
    view = crud_releases.create_release(
        session=session, signer=signer, actor=_actor(user),
        **body.model_dump(exclude={"behaviour_gate", "phases", "mode", "report_after"}),
        behaviour_gate=body.behaviour_gate.model_dump() if body.behaviour_gate else None,
        phases=[p.model_dump() for p in body.phases] if body.phases else None,
        report_after=body.report_after.model_dump() if body.mode == "shadow" and body.report_after else None,
    )
    return _committed(request, session, view)


@router.get("")
def list_releases(
    session: SessionDep,
    _user: AnyPublisherDep,
    fleet: Annotated[str | None, Query(max_length=64, pattern=NAME)] = None,
    channel: Annotated[str | None, Query(max_length=64, pattern=NAME)] = None,
    state: ReleaseState | None = None,
) -> list[ReleasePublic]:
    views = crud_releases.list_releases(session=session, fleet=fleet, channel=channel, state=state)
    return [_public(v) for v in views]


@router.get("/{release_id}", responses=refusals(UNKNOWN))
def get_release(release_id: ReleaseId, session: SessionDep, _user: AnyPublisherDep) -> ReleasePublic:
    view = crud_releases.get_release(session=session, release_id=release_id)
    if view is None:
        raise UnknownRelease(f"no release {release_id}")
    return _public(view)


@router.patch("/{release_id}", responses=CHANGE)
def set_percent(
    release_id: ReleaseId,
    body: PercentUpdate,
    request: Request,
    session: SessionDep,
    signer: SignerDep,
    user: ReleaseDep,
) -> ReleasePublic:
    view = crud_releases.set_percent(
        session=session, signer=signer, release_id=release_id, percent=body.percent, actor=_actor(user)
    )
    return _committed(request, session, view)


@router.post("/{release_id}/halt", responses=CHANGE)
def halt_release(
    release_id: ReleaseId,
    body: HaltRequest,
    request: Request,
    session: SessionDep,
    signer: SignerDep,
    user: ReleaseDep,
) -> ReleasePublic:
    view, _ = crud_releases.halt_release(
        session=session, signer=signer, release_id=release_id, reason=body.reason, actor=_actor(user)
    )
    return _committed(request, session, view)


@router.post("/{release_id}/resume", responses=RESUME)
def resume_release(
    release_id: ReleaseId, request: Request, session: SessionDep, signer: SignerDep, user: ReleaseDep
) -> ReleasePublic:
    view = crud_releases.resume_release(
        session=session, signer=signer, release_id=release_id, actor=_actor(user)
    )
    return _committed(request, session, view)


@router.post("/{release_id}/promote", responses=refusals({
    **UNKNOWN, ReleaseSuperseded: "the release is superseded",
    NotShadow: "the release is not a shadow release",
    ReleaseHalted: "the release was halted (by an operator or a gate)",
}))
def promote_release(
    release_id: ReleaseId,
    body: PromoteRequest,
    request: Request,
    session: SessionDep,
    signer: SignerDep,
    user: ReleaseDep,
) -> ReleasePublic:
    """A shadow release becomes a normal one, same salt: the devices that hold the candidate
    activate it without downloading it again (docs/behaviour.md "Shadow runs")."""
    view = crud_releases.promote_release(
        session=session, signer=signer, release_id=release_id, actor=_actor(user), percent=body.percent
    )
    return _committed(request, session, view)


@router.get("/{release_id}/status", responses=refusals(UNKNOWN))
def release_status(
    release_id: ReleaseId, session: SessionDep, settings: SettingsDep, _user: AnyPublisherDep
) -> ReleaseStatus:
    status = crud_releases.release_status(session=session, release_id=release_id)
    return ReleaseStatus.model_validate(
        {**status, "gate_failure_rate": settings.health_failure_rate,
         "gate_min_devices": settings.health_min_devices}
    )


class AdoptionPoint(BaseModel):
    at: str
    installed: int = Field(description="devices that had reported installing this version")
    failed: dict[str, int] = Field(description="reason → devices whose last report on it was that failure")
    pending: int = Field(description="in the rollout bucket, neither installed nor failed yet")
    outside: int = Field(description="registered devices outside the rollout bucket")


class Adoption(BaseModel):
    release_id: int
    model: str
    version: int
    percent: float
    state: ReleaseState
    devices_registered: int
    devices_in_rollout: int
    points: list[AdoptionPoint] = Field(description="oldest first, from the release's creation to now")


@router.get("/{release_id}/adoption", responses=refusals(UNKNOWN))
def release_adoption(
    release_id: ReleaseId,
    session: SessionDep,
    _user: AnyPublisherDep,
    points: Annotated[int, Query(ge=1, le=adoption.POINTS_MAX)] = 60,
) -> Adoption:
    """Adoption over time from device reports, by the time the service received each
    (sync_service/adoption.py): the release console's chart."""
    view = crud_releases.get_release(session=session, release_id=release_id)
    if view is None:
        raise UnknownRelease(f"no release {release_id}")
    return Adoption.model_validate(adoption.adoption(session, view, points=points))


class VersionBehaviourPublic(BaseModel):
    version: int
    devices: int
    reports: int
    rows: int
    anomalies: int
    anomaly_rate: float
    histogram: list[int] | None = Field(description="summed counts per bin of the manifest's score_edges")
    latency_p50_ms: float = Field(description="median of the reports' p50s")
    latency_p95_ms: float = Field(description="95th percentile (nearest rank) of the reports' p95s")
    providers: dict[str, int] = Field(description="provider → devices whose newest report ran on it")


class ReferenceBehaviour(BaseModel):
    anomaly_rate: float
    histogram: list[float]
    score_edges: list[float]


class GateState(BaseModel):
    bounds: GateBounds | None = Field(description="null: the release has no behaviour gate")
    baseline: str = Field(description="what the candidate is judged against: 'incumbent vN', 'reference', "
                          "or 'active model (shadow)' for a shadow release")
    rate_ratio: float | None
    psi: float | None
    breach: str | None = Field(description="the halt reason when the bounds are left")
    waiting: str | None = Field(description="why it is not judged yet")


class ShadowBehaviour(BaseModel):
    devices: int
    reports: int
    rows: int = Field(description="rows both models scored")
    agreement: float | None = Field(description="Σ agree / Σ rows")
    active_anomaly_rate: float | None
    shadow_anomaly_rate: float | None
    rank_correlation: float | None = Field(
        description="the reports' Spearman correlations, weighted by their pairs")


class ReleaseBehaviour(BaseModel):
    release_id: int
    model: str
    version: int
    mode: ReleaseMode
    since: datetime = Field(description="reports received since the release was created or last resumed")
    candidate: VersionBehaviourPublic
    incumbent: VersionBehaviourPublic | None = Field(
        description="the newest lower version with reports in the fleet in the same window"
    )
    reference: ReferenceBehaviour | None = Field(description="the manifest's profile of the reference model")
    shadow: ShadowBehaviour | None = Field(
        description="a release created in shadow mode: its agreement reports in the same window")
    gate: GateState


@router.get("/{release_id}/behaviour", responses=refusals(UNKNOWN))
def release_behaviour(
    release_id: ReleaseId, session: SessionDep, storage: StorageDep, _user: AnyPublisherDep
) -> ReleaseBehaviour:
    """What the candidate did in the field beside the incumbent, from devices' behaviour
    reports (docs/behaviour.md), and the behaviour gate's judgement."""
    view = crud_releases.get_release(session=session, release_id=release_id)
    if view is None:
        raise UnknownRelease(f"no release {release_id}")
    return ReleaseBehaviour.model_validate(behaviour.release_behaviour(session, storage, view))
