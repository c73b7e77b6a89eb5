"""Request dependencies, as ``Annotated`` aliases routes declare in their signatures."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Depends, Request
from pydantic import BeforeValidator, Field, Strict
from sqlmodel import Session

from packager.manifest import Root
from sync_service import crud
from sync_service.api.openapi import raises
from sync_service.auth import TokenKind
from sync_service.core.config import Settings
from sync_service.core.keys import ServiceKeys
from sync_service.errors import DatabaseUnavailable, Forbidden, StorageError, Unauthorized
from sync_service.index import IndexSigner
from sync_service.storage import Storage


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


# Requests holding a database session at once. FastAPI closes a function-scoped session only
# after the response is validated, and for a sync route that validation waits for a worker
# thread (anyio's default 40). Unbounded, 100+ concurrent registrations deadlocked: every
# thread waited on the pool while the pool's connections sat with finished requests queued
# for a thread. Below both the thread count and the pool size (app.state.db_slots,
# sync_service.db.session_slots) a holder always finds a thread and a connection; the rest
# wait here holding nothing.
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _db_slots(request: Request) -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()  # one per loop: test clients each run their own
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = asyncio.Semaphore(request.app.state.db_slots)
    return slots


@raises(DatabaseUnavailable)
async def get_session(request: Request) -> AsyncIterator[Session]:
    # Async on purpose: entering and leaving (returning the connection) run on the event
    # loop, never queued behind busy worker threads.
    async with _db_slots(request):
        with Session(request.app.state.engine) as session:
            yield session


@raises(StorageError)
def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


def get_keys(request: Request) -> ServiceKeys:
    keys: ServiceKeys = request.app.state.keys
    return keys


def get_root(request: Request) -> Root:
    return get_keys(request).root


def get_index_key(request: Request) -> Ed25519PrivateKey:
    return get_keys(request).index_key


SettingsDep = Annotated[Settings, Depends(get_settings)]
# scope="function": the session (and its pooled connection) is released when the route
# function returns, not after the body is sent: a slow download or a long stream must not
# hold a database connection (100 devices fetching a blob exhausted the pool otherwise).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
StorageDep = Annotated[Storage, Depends(get_storage)]
KeysDep = Annotated[ServiceKeys, Depends(get_keys)]
RootDep = Annotated[Root, Depends(get_root)]
IndexKeyDep = Annotated[Ed25519PrivateKey, Depends(get_index_key)]


def get_signer(keys: KeysDep, settings: SettingsDep) -> IndexSigner:
    return IndexSigner(keys=(keys.index_key,), lifetime=settings.index_lifetime)


SignerDep = Annotated[IndexSigner, Depends(get_signer)]

def integral_number(value: Any) -> Any:
    # JSON Schema counts 1.0 as an integer (the same number as 1), so the schema's "integer"
    # cannot refuse it: accept it as 1. Booleans and numeric strings stay refused (Strict).
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# A JSON integer from 1 to PostgreSQL's INTEGER maximum: 1 or 1.0, never true/false or "1"
# (lax pydantic would take both). The bounds come before the validator, so the schema has them.
Version = Annotated[int, Strict(), Field(ge=1, le=2**31 - 1), BeforeValidator(integral_number)]

# One line of printable text, for free-text fields: PostgreSQL refuses NUL in text columns
# (a 500 if it got there).
TEXT_LINE = r"^[^\x00-\x1f\x7f]*$"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a publisher (with scopes), an enrollment token or a device."""

    token_id: int
    kind: TokenKind
    scopes: frozenset[str]
    fleet_id: int | None
    device_id: str | None
    name: str

    @property
    def is_publisher(self) -> bool:
        return self.kind == "publisher"

    @property
    def is_device(self) -> bool:
        return self.kind == "device"


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("missing Authorization: Bearer token", code="missing_token")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'", code="bad_auth_header")
    return token.strip()


@raises(Unauthorized)
def get_principal(request: Request, session: SessionDep) -> Principal:
    row = crud.get_token(session=session, plain=bearer_token(request))
    if row is None or row.id is None:
        raise Unauthorized("unknown or revoked token", code="invalid_token")
    principal = Principal(
        token_id=row.id,
        kind=row.kind,
        scopes=frozenset(s for s in row.scopes.split(",") if s),
        fleet_id=row.fleet_id,
        device_id=row.device_id,
        name=row.name,
    )
    request.state.principal = principal
    # End the read now so the pooled connection goes back before the route function waits
    # for a worker thread: a connection is then held only while a thread is using it.
    session.rollback()
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_scope(scope: str) -> Callable[..., Principal]:
    @raises(Forbidden)
    def check(principal: PrincipalDep) -> Principal:
        if not principal.is_publisher:
            raise Forbidden(f"a publisher token with scope {scope!r} is needed", code="wrong_token_kind")
        if scope not in principal.scopes:
            raise Forbidden(f"token lacks scope {scope!r}", code="missing_scope")
        return principal

    return check


def PublisherDep(scope: str) -> Any:
    """``user: PublisherDep("publish")``: a publisher token holding ``scope``."""
    return Annotated[Principal, Depends(require_scope(scope))]


@raises(Forbidden)
def _any_publisher(principal: PrincipalDep) -> Principal:
    if not principal.is_publisher:
        raise Forbidden("a publisher token is needed", code="wrong_token_kind")
    return principal


@raises(Forbidden)
def _device(principal: PrincipalDep) -> Principal:
    if not principal.is_device or principal.fleet_id is None:
        raise Forbidden("a device token is needed", code="wrong_token_kind")
    return principal


@raises(Forbidden)
def _enrollment(principal: PrincipalDep) -> Principal:
    if principal.kind != "enrollment" or principal.fleet_id is None:
        raise Forbidden("an enrollment token is needed", code="wrong_token_kind")
    return principal


@raises(Forbidden)
def _device_or_publisher(principal: PrincipalDep) -> Principal:
    if principal.is_publisher or (principal.is_device and principal.fleet_id is not None):
        return principal
    raise Forbidden("a device or publisher token is needed", code="wrong_token_kind")


AnyPublisherDep = Annotated[Principal, Depends(_any_publisher)]
DeviceDep = Annotated[Principal, Depends(_device)]
EnrollmentDep = Annotated[Principal, Depends(_enrollment)]
ReaderDep = Annotated[Principal, Depends(_device_or_publisher)]
# Typed aliases of PublisherDep(scope), for mypy (a call is not allowed in an annotation).
PublishDep = Annotated[Principal, Depends(require_scope("publish"))]
ReleaseDep = Annotated[Principal, Depends(require_scope("release"))]
AdminDep = Annotated[Principal, Depends(require_scope("admin"))]
