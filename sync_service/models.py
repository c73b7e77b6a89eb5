"""Database tables (SQLModel). Tables are not the wire format: routes convert at the edge
into the `*Public` / `*Create` pydantic classes each route module declares
(sync_service/api/routes/)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Column, Text, UniqueConstraint
from sqlmodel import AutoString, Field, SQLModel

from sync_service.auth import TokenKind

# The words stored in (and answered from) the status columns, as on the wire.
ReleaseState = Literal["active", "halted", "superseded"]
# install: devices in the bucket run it; shadow: they hold it and run it beside the active
# model, acting on nothing it says (docs/behaviour.md "Shadow runs")
ReleaseMode = Literal["install", "shadow"]
BlobKind = Literal["manifest", "artifact", "reference"]
ReportKind = Literal["installed", "install_failed", "golden_failed", "transfer_failed", "stale_index",
                     "inference_stats", "behaviour", "shadow"]
Platform = Literal["android", "ios", "linux"]


# Column sizes the API validates against at the edge (sync_service/api/routes/): SQLite
# ignores a VARCHAR's length, PostgreSQL refuses a longer value, so a length the API let
# through would be a 500 on PostgreSQL only. tests/sync_service/test_limits.py sends each
# at its maximum on both.
TOKEN_NAME_MAX = 128
DEVICE_ID_MAX = 128
PROVIDERS_MAX = 512


def now() -> datetime:
    # Aware UTC: sqlmodel's UTCDateTime refuses naive values; SQLite stores it without offset
    # and hands it back as UTC, PostgreSQL as timestamptz.
    return datetime.now(UTC)


def one_of(max_length: int, **kwargs: Any) -> Any:
    """A string column typed with one of the Literal types above: SQLModel finds no column
    type for a Literal by itself, so it is named (the same VARCHAR as a plain ``str``)."""
    return Field(max_length=max_length, sa_type=AutoString(length=max_length), **kwargs)


class Fleet(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True, max_length=64)
    created_at: datetime = Field(default_factory=now)


class Channel(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("fleet_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    fleet_id: int = Field(foreign_key="fleet.id", index=True)
    name: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=now)


class ApiToken(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(unique=True, index=True, max_length=64)
    kind: TokenKind = one_of(16)
    scopes: str = Field(default="", max_length=64)  # comma-separated: publish,release,admin
    name: str = Field(default="", max_length=TOKEN_NAME_MAX)
    fleet_id: int | None = Field(default=None, foreign_key="fleet.id")
    device_id: str | None = Field(default=None, max_length=DEVICE_ID_MAX, index=True)
    created_at: datetime = Field(default_factory=now)
    revoked_at: datetime | None = None


class Blob(SQLModel, table=True):
    sha256: str = Field(primary_key=True, max_length=64)
    length: int
    kind: BlobKind = one_of(16)
    created_at: datetime = Field(default_factory=now)


class ModelVersion(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, max_length=64)
    version: int
    manifest_sha256: str = Field(foreign_key="blob.sha256", max_length=64)
    manifest_length: int
    created_at: datetime = Field(default_factory=now)


class ModelArtifact(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("model_version_id", "target"),)
    id: int | None = Field(default=None, primary_key=True)
    model_version_id: int = Field(foreign_key="modelversion.id", index=True)
    target: str = Field(max_length=32)
    sha256: str = Field(foreign_key="blob.sha256", index=True, max_length=64)
    length: int
    precision: str = Field(max_length=8)


class Release(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    channel_id: int = Field(foreign_key="channel.id", index=True)
    model_version_id: int = Field(foreign_key="modelversion.id", index=True)
    model_name: str = Field(index=True, max_length=64)
    percent: float = 0.0
    salt: str = Field(max_length=64)
    urgent: bool = False
    state: ReleaseState = one_of(16, default="active")
    mode: ReleaseMode = one_of(16, default="install")
    # a shadow release's report_after; kept after promote (it tells a release was a shadow)
    report_rows: int | None = None
    report_hours: float | None = None
    halt_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    halted_by_health_gate: bool = False
    health_since: datetime | None = None  # health-gate window start: creation or last resume
    # the behaviour gate's bounds (sync_service/behaviour.GateBounds as JSON); None: no gate
    behaviour_gate: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # a phased ramp (sync_service/phases.Schedule's phases as JSON), the phase it is in
    # (0-based) and since when; None: the percent changes only by hand
    phases: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    phase: int = 0
    phase_since: datetime | None = None
    created_at: datetime = Field(default_factory=now)
    updated_at: datetime = Field(default_factory=now)


class ChannelIndexDoc(SQLModel, table=True):
    """Every signed index version ever served, newest wins; kept for audit."""

    __table_args__ = (UniqueConstraint("channel_id", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    channel_id: int = Field(foreign_key="channel.id", index=True)
    version: int
    body: str = Field(sa_column=Column(Text, nullable=False))  # the exact bytes served
    etag: str = Field(max_length=66)
    expires_at: datetime
    created_at: datetime = Field(default_factory=now)


class Device(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=DEVICE_ID_MAX)
    fleet_id: int = Field(foreign_key="fleet.id", index=True)
    platform: Platform = one_of(16)
    app_version: str = Field(default="", max_length=32)
    ort_version: str = Field(default="", max_length=32)
    providers: str = Field(default="", max_length=PROVIDERS_MAX)  # comma-separated
    registered_at: datetime = Field(default_factory=now)
    last_seen_at: datetime = Field(default_factory=now)


class DeviceEvent(SQLModel, table=True):
    event_id: str = Field(primary_key=True, max_length=64)
    device_id: str = Field(foreign_key="device.id", index=True, max_length=DEVICE_ID_MAX)
    kind: ReportKind = one_of(32, index=True)
    model_name: str | None = Field(default=None, max_length=64, index=True)
    model_version: int | None = None
    reason: str | None = Field(default=None, max_length=256)
    data: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # JSON
    at: datetime
    received_at: datetime = Field(default_factory=now)


AuditAction = Literal["create", "set_percent", "halt", "resume", "promote"]


class AuditEvent(SQLModel, table=True):
    """Who changed which release, when, and the index version the change signed: written in
    the transaction of the change itself, so a change and its record commit together."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=now, index=True)
    # the token that asked (None: the service itself, e.g. the health gate)
    actor_token_id: int | None = Field(default=None, foreign_key="apitoken.id")
    actor: str = Field(max_length=TOKEN_NAME_MAX)
    action: AuditAction = one_of(16)
    release_id: int = Field(foreign_key="release.id", index=True)
    fleet: str = Field(max_length=64, index=True)
    channel: str = Field(max_length=64)
    model: str = Field(max_length=64)
    version: int
    index_version: int | None = None  # None: nothing changed (halting a halted release)
    detail: str = Field(default="{}", sa_column=Column(Text, nullable=False))  # JSON


class ConsoleSession(SQLModel, table=True):
    """A release console login (sync_service/console/sessions.py): the browser holds a random
    id in an HttpOnly cookie, the table its hash. The token it was opened with is read again
    on every request, so revoking the token ends its sessions."""

    id_hash: str = Field(primary_key=True, max_length=64)  # sha256 hex of the cookie's value
    token_id: int = Field(foreign_key="apitoken.id", index=True)
    csrf: str = Field(max_length=64)  # echoed by every form the console serves
    created_at: datetime = Field(default_factory=now)
    expires_at: datetime = Field(index=True)
