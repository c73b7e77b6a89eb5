"""Phased ramps (docs/behaviour.md): a release may carry a schedule — for example 5% for an
hour, 25% for an hour, then 100% — and the service advances it: when a phase has been held
for its duration and the gates pass, the next phase's percent is set and a new index signed;
at a breach it stops (the gate halts the release).

Judged before each step: the release is still active (the health gate has not halted it)
and its behaviour gate, when it has one, neither breaches nor still waits for devices and
rows. A phase whose judgement waits keeps holding: a ramp never widens on no evidence.

``advance`` is a pure step over the database at a given moment (the tests pass the moment);
``advance_periodically`` runs it in the service. Replicas may both run it: each step is a
conditional update on the phase number, under the channel lock the percent change takes."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import update
from sqlmodel import Session, col, select

from sync_service import behaviour, crud_releases
from sync_service.audit import Actor
from sync_service.crud_releases import phase_state
from sync_service.index import IndexSigner, cache_for
from sync_service.models import Release, now
from sync_service.storage import Storage

log = logging.getLogger("modelsync.phases")
SCHEDULE = Actor(None, "phase-schedule")
HOLD_MAX_S = 30 * 24 * 3600


class Phase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    percent: float = Field(gt=0, le=100, allow_inf_nan=False)
    hold_s: int = Field(60, ge=1, le=HOLD_MAX_S, description="held at least this long before the next")


class Schedule(BaseModel):
    """The phases in order; the release starts at the first one's percent."""

    model_config = ConfigDict(extra="forbid")
    phases: list[Phase] = Field(min_length=2, max_length=10)

    @model_validator(mode="after")
    def _rising(self) -> Schedule:
        percents = [p.percent for p in self.phases]
        if any(b <= a for a, b in itertools.pairwise(percents)):
            raise ValueError("phase percents must rise strictly")
        return self


def advance(
    session: Session, signer: IndexSigner, storage: Storage, moment: datetime | None = None,
    forget: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Step every active phased release whose hold is over and whose gates pass; returns
    what moved (release id, from, to, phase), or why a due one held. ``forget`` is told each
    channel whose index changed (the index cache's forget_channel)."""
    at = moment or now()
    rows = session.exec(
        select(Release).where(Release.state == "active", col(Release.phases).is_not(None))
        .order_by(col(Release.id))
    ).all()
    moved = []
    for release in rows:
        st = phase_state(release)
        if st is None or st["done"] or release.id is None or at < st["next_judgement"]:
            continue
        view = crud_releases.get_release(session=session, release_id=release.id)
        if view is None:
            continue
        held = None
        if release.behaviour_gate:
            gate = behaviour.release_behaviour(session, storage, view)["gate"]
            held = gate["breach"] or (f"waiting: {gate['waiting']}" if gate["waiting"] else None)
        if held is not None:
            moved.append({"release_id": release.id, "held": held})
            continue
        # only one replica takes the step: the phase number is the condition
        taken = session.exec(
            update(Release).where(col(Release.id) == release.id, col(Release.phase) == release.phase,
                                  col(Release.state) == "active")
            .values(phase=release.phase + 1, phase_since=at)
        )
        if taken.rowcount != 1:
            session.rollback()
            continue
        changed = crud_releases.set_percent(session=session, signer=signer, release_id=release.id,
                                            percent=st["next_percent"], actor=SCHEDULE)
        session.commit()
        if forget is not None and changed.channel.id is not None:
            forget(changed.channel.id)
        moved.append({"release_id": release.id, "from": st["percent"], "to": st["next_percent"],
                      "phase": st["phase"] + 1})
    return moved


async def advance_periodically(app: Any, every_s: float) -> None:
    """``advance`` every ``every_s`` seconds in a worker thread, until cancelled."""
    from sync_service.api.deps import get_signer

    def step() -> list[dict[str, Any]]:
        with Session(app.state.engine) as session:
            return advance(session, get_signer(app.state.keys, app.state.settings), app.state.storage,
                           forget=cache_for(app.state).forget_channel)

    while True:
        await asyncio.sleep(every_s)
        try:
            for m in await asyncio.to_thread(step):
                if "to" in m:
                    log.info("release %s: phase %s, %s%% → %s%%",
                             m["release_id"], m["phase"], m["from"], m["to"])
        except Exception:  # a failed step must never take the service down; the next one retries
            log.exception("phase step failed")
