"""Database reads and writes for fleets, channels, tokens, blobs and model versions.

Keyword-only functions that return ``None`` for "not there" rather than raising HTTP
errors: the routes decide what a missing row means. Functions that write ``flush`` but
do not ``commit``, so a caller can make several writes one transaction; the ``*_commit``
helpers used by the admin CLI commit themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import exists
from sqlmodel import Session, col, select

from sync_service.auth import TokenKind, hash_token, new_token
from sync_service.models import (
    ApiToken,
    Blob,
    BlobKind,
    Channel,
    Fleet,
    ModelArtifact,
    ModelVersion,
    Release,
    now,
)

DEFAULT_CHANNEL = "stable"

# --------------------------------------------------------------------------- fleets, channels


def get_fleet(*, session: Session, name: str) -> Fleet | None:
    return session.exec(select(Fleet).where(Fleet.name == name)).first()


def get_fleet_by_id(*, session: Session, fleet_id: int) -> Fleet | None:
    return session.get(Fleet, fleet_id)


def list_fleets(*, session: Session) -> Sequence[Fleet]:
    return session.exec(select(Fleet).order_by(col(Fleet.name))).all()


def create_fleet(*, session: Session, name: str, default_channel: bool = True) -> Fleet:
    """A fleet, and its ``stable`` channel unless told otherwise."""
    fleet = Fleet(name=name)
    session.add(fleet)
    session.flush()
    if default_channel:
        assert fleet.id is not None
        session.add(Channel(fleet_id=fleet.id, name=DEFAULT_CHANNEL))
        session.flush()
    return fleet


def get_channel(*, session: Session, fleet_id: int, name: str) -> Channel | None:
    return session.exec(
        select(Channel).where(Channel.fleet_id == fleet_id, Channel.name == name)
    ).first()


def list_channels(*, session: Session, fleet_id: int | None = None) -> Sequence[Channel]:
    query = select(Channel).order_by(col(Channel.fleet_id), col(Channel.name))
    if fleet_id is not None:
        query = query.where(Channel.fleet_id == fleet_id)
    return session.exec(query).all()


def create_channel(*, session: Session, fleet_id: int, name: str) -> Channel:
    channel = Channel(fleet_id=fleet_id, name=name)
    session.add(channel)
    session.flush()
    return channel


# --------------------------------------------------------------------------- tokens


def create_token(
    *,
    session: Session,
    kind: TokenKind,
    name: str = "",
    scopes: Sequence[str] = (),
    fleet_id: int | None = None,
    device_id: str | None = None,
) -> tuple[str, ApiToken]:
    """Returns ``(plain token, row)``; the plain token exists only in this return value."""
    plain, digest = new_token(kind)
    row = ApiToken(
        token_hash=digest,
        kind=kind,
        scopes=",".join(scopes),
        name=name,
        fleet_id=fleet_id,
        device_id=device_id,
    )
    session.add(row)
    session.flush()
    return plain, row


def get_token(*, session: Session, plain: str) -> ApiToken | None:
    """The live (not revoked) token row for a plain token."""
    row = session.exec(select(ApiToken).where(ApiToken.token_hash == hash_token(plain))).first()
    if row is None or row.revoked_at is not None:
        return None
    return row


def get_token_by_id(*, session: Session, token_id: int) -> ApiToken | None:
    return session.get(ApiToken, token_id)


def list_tokens(*, session: Session, include_revoked: bool = False) -> Sequence[ApiToken]:
    query = select(ApiToken).where(ApiToken.kind != "device").order_by(col(ApiToken.id))
    if not include_revoked:
        query = query.where(col(ApiToken.revoked_at).is_(None))
    return session.exec(query).all()


def revoke_token(*, session: Session, token_id: int) -> ApiToken | None:
    row = session.get(ApiToken, token_id)
    if row is None:
        return None
    if row.revoked_at is None:
        row.revoked_at = now()
        session.add(row)
        session.flush()
    return row


# --------------------------------------------------------------------------- blobs


def get_blob(*, session: Session, sha256: str) -> Blob | None:
    return session.get(Blob, sha256)


def ensure_blob(*, session: Session, sha256: str, length: int, kind: BlobKind) -> Blob:
    blob = session.get(Blob, sha256)
    if blob is None:
        blob = Blob(sha256=sha256, length=length, kind=kind)
        session.add(blob)
        session.flush()
    return blob


def blob_released_to_fleet(*, session: Session, sha256: str, fleet_id: int) -> bool:
    """True when ``sha256`` is the manifest or an artifact of a model version that has a
    release (in any state) on one of the fleet's channels."""
    released_versions = (
        select(Release.model_version_id)
        .join(Channel, col(Channel.id) == col(Release.channel_id))
        .where(Channel.fleet_id == fleet_id)
    )
    as_manifest = select(ModelVersion.id).where(
        ModelVersion.manifest_sha256 == sha256, col(ModelVersion.id).in_(released_versions)
    )
    as_artifact = select(ModelArtifact.id).where(
        ModelArtifact.sha256 == sha256, col(ModelArtifact.model_version_id).in_(released_versions)
    )
    return bool(session.exec(select(exists(as_manifest) | exists(as_artifact))).one())


# --------------------------------------------------------------------------- model versions


def get_model_version(*, session: Session, name: str, version: int) -> ModelVersion | None:
    return session.exec(
        select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)
    ).first()


def list_artifacts(*, session: Session, model_version_id: int) -> Sequence[ModelArtifact]:
    return session.exec(
        select(ModelArtifact)
        .where(ModelArtifact.model_version_id == model_version_id)
        .order_by(col(ModelArtifact.target))
    ).all()


def list_model_versions(*, session: Session) -> dict[str, list[int]]:
    """``{name: [versions ascending]}``."""
    rows = session.exec(
        select(ModelVersion.name, ModelVersion.version).order_by(
            col(ModelVersion.name), col(ModelVersion.version)
        )
    ).all()
    out: dict[str, list[int]] = {}
    for name, version in rows:
        out.setdefault(name, []).append(version)
    return out


def create_model_version(
    *,
    session: Session,
    name: str,
    version: int,
    manifest_sha256: str,
    manifest_length: int,
    artifacts: Sequence[tuple[str, str, int, str]],
) -> ModelVersion:
    """``artifacts``: ``(target, sha256, length, precision)``; blob rows must exist."""
    mv = ModelVersion(
        name=name, version=version, manifest_sha256=manifest_sha256, manifest_length=manifest_length
    )
    session.add(mv)
    session.flush()
    assert mv.id is not None
    for target, sha, length, precision in artifacts:
        session.add(
            ModelArtifact(
                model_version_id=mv.id, target=target, sha256=sha, length=length, precision=precision
            )
        )
    session.flush()
    return mv


NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"


def valid_name(name: str) -> bool:
    """Fleet and channel names: lower-case, digits, ``._-``; at most 64 characters."""
    import re

    return re.match(NAME_PATTERN, name) is not None
