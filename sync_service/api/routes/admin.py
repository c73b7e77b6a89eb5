"""Fleets, channels and tokens over HTTP (scope ``admin``): what `modelsync admin` does
beside the service, for operators who only reach it through the network. Token secrets
appear once, in the answer that creates them."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from packager.manifest import format_time
from sync_service import crud
from sync_service.api.deps import TEXT_LINE, AdminDep, SessionDep
from sync_service.api.openapi import refusals
from sync_service.auth import SCOPES, Scope, TokenKind
from sync_service.errors import Conflict, NotFound
from sync_service.models import TOKEN_NAME_MAX, ApiToken

router = APIRouter(prefix="/v1/admin", tags=["operators"])

Name = Field(pattern=crud.NAME_PATTERN, description="lower-case letters, digits, . _ -; at most 64")
# A name no fleet can have (too long, NUL: a 500 on PostgreSQL) is refused before the lookup.
FleetName = Annotated[str, Path(pattern=crud.NAME_PATTERN)]


class FleetCreate(BaseModel):
    name: str = Name


class ChannelCreate(BaseModel):
    name: str = Name


class FleetPublic(BaseModel):
    name: str
    channels: list[str]
    created: str


# One model per kind, so the schema itself says which fields each kind takes (a single model
# documented requests as valid that the route then refused).
class PublisherTokenCreate(BaseModel):
    kind: Literal["publisher"]
    scopes: list[Scope] = Field(min_length=1, description="at least one")
    fleet: None = Field(None, description="publisher tokens belong to no fleet")
    name: str = Field("", max_length=TOKEN_NAME_MAX, pattern=TEXT_LINE)


class EnrollmentTokenCreate(BaseModel):
    kind: Literal["enrollment"]
    scopes: list[Scope] = Field(default_factory=list, max_length=0, description="none")
    fleet: str = Field(pattern=crud.NAME_PATTERN)
    name: str = Field("", max_length=TOKEN_NAME_MAX, pattern=TEXT_LINE)


TokenCreate = Annotated[PublisherTokenCreate | EnrollmentTokenCreate, Field(discriminator="kind")]


class TokenPublic(BaseModel):
    id: int
    kind: TokenKind
    scopes: list[str]
    fleet: str | None
    name: str
    created: str
    revoked: str | None


class TokenCreated(TokenPublic):
    token: str = Field(description="the secret: shown once, only its hash is stored")


_CONFLICT = refusals({Conflict: "already exists"})


def _fleet_public(session: SessionDep, fleet_id: int) -> FleetPublic:
    fleet = crud.get_fleet_by_id(session=session, fleet_id=fleet_id)
    assert fleet is not None
    channels = [c.name for c in crud.list_channels(session=session, fleet_id=fleet_id)]
    return FleetPublic(name=fleet.name, channels=channels, created=format_time(fleet.created_at))


def _token_public(session: SessionDep, row: ApiToken) -> TokenPublic:
    fleet = crud.get_fleet_by_id(session=session, fleet_id=row.fleet_id) if row.fleet_id else None
    assert row.id is not None
    return TokenPublic(
        id=row.id,
        kind=row.kind,
        scopes=[s for s in row.scopes.split(",") if s],
        fleet=fleet.name if fleet else None,
        name=row.name,
        created=format_time(row.created_at),
        revoked=format_time(row.revoked_at) if row.revoked_at else None,
    )


@router.get("/fleets", response_model=list[FleetPublic])
def list_fleets(_admin: AdminDep, session: SessionDep) -> list[FleetPublic]:
    return [_fleet_public(session, f.id) for f in crud.list_fleets(session=session) if f.id is not None]


@router.post("/fleets", status_code=201, response_model=FleetPublic, responses=_CONFLICT)
def create_fleet(body: FleetCreate, _admin: AdminDep, session: SessionDep) -> FleetPublic:
    if crud.get_fleet(session=session, name=body.name) is not None:
        raise Conflict(f"fleet {body.name!r} already exists", code="fleet_exists")
    try:
        fleet = crud.create_fleet(session=session, name=body.name)
        session.commit()
    except IntegrityError:
        raise Conflict(f"fleet {body.name!r} already exists", code="fleet_exists") from None
    assert fleet.id is not None
    return _fleet_public(session, fleet.id)


@router.post(
    "/fleets/{fleet}/channels",
    status_code=201,
    response_model=FleetPublic,
    responses=refusals({Conflict: "already exists", NotFound: "no such fleet"}),
)
def create_channel(
    fleet: FleetName, body: ChannelCreate, _admin: AdminDep, session: SessionDep
) -> FleetPublic:
    row = crud.get_fleet(session=session, name=fleet)
    if row is None or row.id is None:
        raise NotFound(f"no fleet {fleet!r}", code="fleet_not_found")
    if crud.get_channel(session=session, fleet_id=row.id, name=body.name) is not None:
        raise Conflict(f"fleet {fleet!r} already has a channel {body.name!r}", code="channel_exists")
    try:
        crud.create_channel(session=session, fleet_id=row.id, name=body.name)
        session.commit()
    except IntegrityError:
        raise Conflict(
            f"fleet {fleet!r} already has a channel {body.name!r}", code="channel_exists"
        ) from None
    return _fleet_public(session, row.id)


@router.get("/tokens", response_model=list[TokenPublic])
def list_tokens(_admin: AdminDep, session: SessionDep, include_revoked: bool = False) -> list[TokenPublic]:
    return [
        _token_public(session, t) for t in crud.list_tokens(session=session, include_revoked=include_revoked)
    ]


@router.post(
    "/tokens",
    status_code=201,
    response_model=TokenCreated,
    responses=refusals({NotFound: "no such fleet"}),
)
def create_token(body: TokenCreate, _admin: AdminDep, session: SessionDep) -> TokenCreated:
    fleet_id = None
    if isinstance(body, EnrollmentTokenCreate):
        fleet = crud.get_fleet(session=session, name=body.fleet)
        if fleet is None:
            raise NotFound(f"no fleet {body.fleet!r}", code="fleet_not_found")
        fleet_id = fleet.id
    scopes = sorted(set(body.scopes), key=SCOPES.index)
    plain, row = crud.create_token(
        session=session, kind=body.kind, scopes=scopes, fleet_id=fleet_id, name=body.name
    )
    session.commit()
    return TokenCreated(token=plain, **_token_public(session, row).model_dump())


@router.post(
    "/tokens/{token_id}/revoke", response_model=TokenPublic, responses=refusals({NotFound: "no such token"})
)
def revoke_token(token_id: int, _admin: AdminDep, session: SessionDep) -> TokenPublic:
    # Device tokens are managed by (re-)registration, not here.
    row = crud.get_token_by_id(session=session, token_id=token_id)
    if row is None or row.kind == "device":
        raise NotFound(f"no token with id {token_id}", code="token_not_found")
    crud.revoke_token(session=session, token_id=token_id)
    session.commit()
    return _token_public(session, row)
