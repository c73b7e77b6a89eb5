"""The audit log of release changes (any publisher token, as reading releases): who, by token
id and name, changed which release, when, and the index version the change signed."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from sync_service import audit
from sync_service.api.deps import AnyPublisherDep, SessionDep
from sync_service.crud import NAME_PATTERN
from sync_service.models import AuditAction

router = APIRouter(tags=["releases"])


class AuditEventPublic(BaseModel):
    id: int
    at: str
    actor: str = Field(description="the token's name, or 'health-gate' for the service's own halts")
    actor_token_id: int | None = Field(
        description="the token's id (`modelsync admin token list`); null: the service itself"
    )
    action: AuditAction
    release_id: int
    fleet: str
    channel: str
    model: str
    version: int
    index_version: int | None = Field(description="the channel index version the change signed")
    detail: dict[str, Any] = Field(description="create: percent, urgent; set_percent: from, to; halt: reason")


@router.get("/v1/audit", response_model=list[AuditEventPublic])
def list_audit(
    session: SessionDep,
    _user: AnyPublisherDep,
    fleet: Annotated[str | None, Query(max_length=64, pattern=NAME_PATTERN)] = None,
    channel: Annotated[str | None, Query(max_length=64, pattern=NAME_PATTERN)] = None,
    release: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    before: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="an event id: page back")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEventPublic]:
    """Newest first."""
    events = audit.list_events(
        session, fleet=fleet, channel=channel, release_id=release, before=before, limit=limit
    )
    return [AuditEventPublic.model_validate(audit.public(e)) for e in events]
