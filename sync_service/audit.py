"""The audit log of release changes: who (token id and name) did what to which release,
when, and which index version the change signed.

A record is added in the change's own transaction (sync_service/crud_releases.py), so a
change that rolls back leaves no record and a committed change always has one. The health
gate's halts are recorded with the service as the actor."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from sqlmodel import Session, col, select

from packager.manifest import format_time
from sync_service.index import aware_utc
from sync_service.models import AuditAction, AuditEvent, Channel, Fleet, ModelVersion, Release


class Changed(Protocol):
    """What a record names (crud_releases.ReleaseView, which imports this module)."""

    @property
    def release(self) -> Release: ...
    @property
    def fleet(self) -> Fleet: ...
    @property
    def channel(self) -> Channel: ...
    @property
    def model_version(self) -> ModelVersion: ...


@dataclass(frozen=True)
class Actor:
    """Who asks for a change: a publisher token, or the service itself (token_id None)."""

    token_id: int | None
    name: str


HEALTH_GATE = Actor(None, "health-gate")


def record(
    session: Session,
    *,
    actor: Actor,
    action: AuditAction,
    view: Changed,
    index_version: int | None,
    detail: dict[str, Any] | None = None,
) -> None:
    if view.release.id is None:
        raise ValueError("an audit record needs a flushed release")
    session.add(
        AuditEvent(
            actor_token_id=actor.token_id,
            actor=actor.name or f"token {actor.token_id}",
            action=action,
            release_id=view.release.id,
            fleet=view.fleet.name,
            channel=view.channel.name,
            model=view.model_version.name,
            version=view.model_version.version,
            index_version=index_version,
            detail=json.dumps(detail or {}, sort_keys=True),
        )
    )


def list_events(
    session: Session,
    *,
    fleet: str | None = None,
    channel: str | None = None,
    release_id: int | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[AuditEvent]:
    """Newest first; ``before`` (an event id) pages back through older events."""
    query = select(AuditEvent).order_by(col(AuditEvent.id).desc()).limit(limit)
    if fleet is not None:
        query = query.where(col(AuditEvent.fleet) == fleet)
    if channel is not None:
        query = query.where(col(AuditEvent.channel) == channel)
    if release_id is not None:
        query = query.where(col(AuditEvent.release_id) == release_id)
    if before is not None:
        query = query.where(col(AuditEvent.id) < before)
    return list(session.exec(query).all())


def public(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": format_time(aware_utc(event.at)),
        "actor": event.actor,
        "actor_token_id": event.actor_token_id,
        "action": event.action,
        "release_id": event.release_id,
        "fleet": event.fleet,
        "channel": event.channel,
        "model": event.model,
        "version": event.version,
        "index_version": event.index_version,
        "detail": json.loads(event.detail),
    }
