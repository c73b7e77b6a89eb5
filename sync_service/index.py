"""Channel-index documents: built from a channel's releases, signed with the service's online
``index`` key, stored as one row per version (the exact bytes served).

Versions per channel only go up. Several replicas may write at once: the table's unique
``(channel_id, version)`` decides, and the loser retries inside a savepoint so the caller's
release change and its index land in one transaction (docs/operations.md, "Replicas").

Freshness: an index is re-signed (same entries, next version, fresh ``expires``) when it is
served within half its lifetime of expiring, so devices never see an expired index from a
live service even when no release changed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from packager.manifest import (
    SPEC_VERSION,
    canonical_bytes,
    format_time,
    parse_time,
    sha256_hex,
    sign,
    utcnow,
)
from sync_service.metrics import count_index_signed
from sync_service.models import Channel, ChannelIndexDoc, Fleet, ModelVersion, Release

# Concurrent writers of one channel are a handful of replicas; a few rounds always settle it.
WRITE_ATTEMPTS = 8


@dataclass(frozen=True)
class IndexSigner:
    """The online index key(s) and how long each signed index stays valid."""

    keys: tuple[Ed25519PrivateKey, ...]
    lifetime: timedelta


@dataclass(frozen=True)
class StoredIndex:
    """One signed index version as served: ``body`` is the response, ``etag`` is quoted."""

    channel_id: int
    version: int
    body: bytes
    etag: str
    expires_at: datetime  # aware UTC


def etag_of(body: bytes) -> str:
    return f'"{sha256_hex(body)}"'


def aware_utc(moment: datetime) -> datetime:
    """Stored times are aware UTC (sqlmodel's UTCDateTime); a naive one is taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.utcoffset() is None else moment.astimezone(UTC)


# --------------------------------------------------------------------------- pure parts


def entry_for(release: Release, model_version: ModelVersion) -> dict[str, Any]:
    return {
        "model": model_version.name,
        "version": model_version.version,
        "manifest": {
            "path": f"blobs/{model_version.manifest_sha256}",
            "length": model_version.manifest_length,
            "sha256": model_version.manifest_sha256,
        },
        "rollout": {"percent": float(release.percent), "salt": release.salt},
        "urgent": bool(release.urgent),
    }


def entries_newest_first(pairs: Sequence[tuple[Release, ModelVersion]]) -> dict[str, list[dict[str, Any]]]:
    """Per model, active releases newest (highest version) first, ending at the first one
    rolled out to everyone: entries after it could never be picked by any device."""
    by_model: dict[str, list[tuple[Release, ModelVersion]]] = {}
    for release, mv in pairs:
        if release.state == "active" and release.mode == "install":
            by_model.setdefault(mv.name, []).append((release, mv))
    models: dict[str, list[dict[str, Any]]] = {}
    for name in sorted(by_model):
        chosen: list[dict[str, Any]] = []
        for release, mv in sorted(by_model[name], key=lambda p: (p[1].version, p[0].id or 0), reverse=True):
            chosen.append(entry_for(release, mv))
            if release.percent >= 100:
                break
        models[name] = chosen
    return models


def shadow_entries(pairs: Sequence[tuple[Release, ModelVersion]]) -> dict[str, list[dict[str, Any]]]:
    """Per model, its active shadow release (one at most: a new one supersedes the older)."""
    shadows: dict[str, list[dict[str, Any]]] = {}
    for release, mv in sorted(pairs, key=lambda p: (p[1].name, -p[1].version)):
        if release.state == "active" and release.mode == "shadow" and mv.name not in shadows:
            after = {"rows": release.report_rows, "hours": release.report_hours}
            shadows[mv.name] = [{**entry_for(release, mv), "report_after": after}]
    return shadows


def build_signed(
    *, fleet: str, channel: str, version: int, expires: str, models: dict[str, list[dict[str, Any]]],
    shadows: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    signed = {
        "_type": "channel-index",
        "spec_version": SPEC_VERSION,
        "fleet": fleet,
        "channel": channel,
        "version": version,
        "expires": expires,
        "models": models,
    }
    if shadows:  # absent when none: the index of a channel without shadows is as before
        signed["shadows"] = shadows
    return signed


def sign_body(signed: dict[str, Any], keys: Sequence[Ed25519PrivateKey]) -> bytes:
    """The served bytes: the whole envelope in RFC 8785 form, so equal documents are equal
    bytes and therefore equal ETags on every replica."""
    return canonical_bytes(sign(signed, keys))


def needs_resign(expires_at: datetime, lifetime: timedelta, now: datetime | None = None) -> bool:
    """True when less than half the lifetime is left."""
    return aware_utc(expires_at) - aware_utc(now or utcnow()) < lifetime / 2


# --------------------------------------------------------------------------- database parts


def active_pairs(session: Session, channel_id: int) -> list[tuple[Release, ModelVersion]]:
    stmt = (
        select(Release, ModelVersion)
        .join(ModelVersion, col(Release.model_version_id) == col(ModelVersion.id))
        .where(Release.channel_id == channel_id, Release.state == "active")
    )
    return [(r, mv) for r, mv in session.exec(stmt).all()]


def newest(session: Session, channel_id: int) -> ChannelIndexDoc | None:
    stmt = (
        select(ChannelIndexDoc)
        .where(ChannelIndexDoc.channel_id == channel_id)
        .order_by(col(ChannelIndexDoc.version).desc())
        .limit(1)
    )
    return session.exec(stmt).first()


def newest_head(session: Session, channel_id: int) -> tuple[int, datetime] | None:
    """Version and expiry of the newest index, without its body: the cache's cheap check."""
    stmt = (
        select(ChannelIndexDoc.version, ChannelIndexDoc.expires_at)
        .where(ChannelIndexDoc.channel_id == channel_id)
        .order_by(col(ChannelIndexDoc.version).desc())
        .limit(1)
    )
    row = session.exec(stmt).first()
    return (row[0], row[1]) if row is not None else None


def _stored(doc: ChannelIndexDoc) -> StoredIndex:
    return StoredIndex(
        channel_id=doc.channel_id,
        version=doc.version,
        body=doc.body.encode("utf-8"),
        etag=doc.etag,
        expires_at=aware_utc(doc.expires_at),
    )


def lock_channel(session: Session, channel_id: int) -> None:
    """Take the channel's write lock for the rest of the transaction, before reading: a row
    lock on PostgreSQL (writers of one channel queue up), the database write lock on SQLite
    (a read snapshot taken before it could not be upgraded to a write later)."""
    session.execute(update(Channel).where(col(Channel.id) == channel_id).values(name=Channel.name))


def write_new_version(
    session: Session,
    channel: Channel,
    signer: IndexSigner,
    *,
    replaces: int | None = None,
    now: datetime | None = None,
) -> StoredIndex:
    """Sign and add the channel's next index version to the caller's transaction (flushed,
    not committed).

    ``replaces``: re-signing for freshness only. If another writer already stored a version
    newer than ``replaces``, that one is returned instead of writing yet another.
    """
    assert channel.id is not None
    fleet = session.get(Fleet, channel.fleet_id)
    if fleet is None:  # a foreign key makes this unreachable short of a broken database
        raise LookupError(f"channel {channel.id} has no fleet")
    last_error: IntegrityError | None = None
    for _ in range(WRITE_ATTEMPTS):
        try:
            with session.begin_nested():
                lock_channel(session, channel.id)
                # Version first, entries second: should a writer still slip in between, our
                # insert collides and the retry sees its change.
                head = newest_head(session, channel.id)
                if replaces is not None and head is not None and head[0] > replaces:
                    current = newest(session, channel.id)
                    assert current is not None
                    return _stored(current)
                version = (head[0] if head else 0) + 1
                moment = now or utcnow()
                expires = format_time(moment + signer.lifetime)
                pairs = active_pairs(session, channel.id)
                signed = build_signed(
                    fleet=fleet.name,
                    channel=channel.name,
                    version=version,
                    expires=expires,
                    models=entries_newest_first(pairs),
                    shadows=shadow_entries(pairs),
                )
                body = sign_body(signed, signer.keys)
                doc = ChannelIndexDoc(
                    channel_id=channel.id,
                    version=version,
                    body=body.decode("utf-8"),
                    etag=etag_of(body),
                    expires_at=parse_time(expires),
                )
                session.add(doc)
                session.flush()
                return StoredIndex(channel.id, version, body, doc.etag, doc.expires_at)
        except IntegrityError as exc:
            last_error = exc
    raise RuntimeError(f"could not store a new index for channel {channel.id}") from last_error


def current_index(
    session: Session, channel: Channel, signer: IndexSigner, *, now: datetime | None = None
) -> StoredIndex:
    """The newest index of the channel, signing a first one or a fresher one when needed
    (and committing it)."""
    assert channel.id is not None
    doc = newest(session, channel.id)
    if doc is not None and not needs_resign(doc.expires_at, signer.lifetime, now):
        return _stored(doc)
    stored = write_new_version(session, channel, signer, replaces=doc.version if doc else 0, now=now)
    session.commit()
    if doc is None or stored.version > doc.version:
        count_index_signed("first" if doc is None else "freshness")
    return stored


# --------------------------------------------------------------------------- hot-path cache


class IndexCache:
    """Newest index per channel, held for ``ttl`` seconds, then re-validated with one small
    indexed query (version only); the body is re-read only when the version moved.

    With several replicas a change made on one replica reaches the others within ``ttl``
    (plus one re-validation query);
    on the replica that made it, ``forget`` makes it visible at once. Expiry is checked on
    every hit, so a cached index is never served past its re-sign point.
    """

    def __init__(self, ttl: float = 1.0) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._items: dict[tuple[int, str], tuple[int, StoredIndex, float]] = {}

    def get(self, fleet_id: int, channel: str, lifetime: timedelta) -> tuple[int, StoredIndex] | None:
        """``(channel_id, index)`` when it may be served without the database.

        Once the TTL has passed, the first caller gets ``None`` and re-validates (through
        ``serve_index``) while every other caller keeps getting the cached copy: one
        database query per channel and TTL, not one per request in flight (no stampede).
        """
        key = (fleet_id, channel)
        item = self._items.get(key)
        if item is None:
            return None
        channel_id, stored, checked = item
        if needs_resign(stored.expires_at, lifetime):
            return None
        now = time.monotonic()
        if now - checked > self.ttl:
            with self._lock:
                if self._items.get(key) is item:  # this caller re-validates; the rest wait a TTL
                    self._items[key] = (channel_id, stored, now)
                    return None
        return channel_id, stored

    def peek(self, fleet_id: int, channel: str) -> tuple[int, StoredIndex] | None:
        item = self._items.get((fleet_id, channel))
        return (item[0], item[1]) if item is not None else None

    def put(self, fleet_id: int, channel: str, channel_id: int, stored: StoredIndex) -> None:
        with self._lock:
            self._items[(fleet_id, channel)] = (channel_id, stored, time.monotonic())

    def forget(self, fleet_id: int, channel: str) -> None:
        with self._lock:
            self._items.pop((fleet_id, channel), None)

    def forget_channel(self, channel_id: int) -> None:
        with self._lock:
            for key in [k for k, v in self._items.items() if v[0] == channel_id]:
                del self._items[key]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def lookup_channel(session: Session, fleet_id: int, name: str) -> Channel | None:
    return session.exec(select(Channel).where(Channel.fleet_id == fleet_id, Channel.name == name)).first()


def serve_index(
    session: Session,
    cache: IndexCache,
    *,
    fleet_id: int,
    channel: str,
    signer: IndexSigner,
) -> StoredIndex | None:
    """The index to serve for ``fleet_id``/``channel`` (None: no such channel), read from
    the database and put in ``cache``; callers try ``cache.get`` first."""
    known = cache.peek(fleet_id, channel)
    if known is not None:
        channel_id, stored = known
        head = newest_head(session, channel_id)
        if head is not None and head[0] == stored.version and not needs_resign(head[1], signer.lifetime):
            cache.put(fleet_id, channel, channel_id, stored)
            return stored
    row = lookup_channel(session, fleet_id, channel)
    if row is None or row.id is None:
        cache.forget(fleet_id, channel)
        return None
    stored = current_index(session, row, signer)
    cache.put(fleet_id, channel, row.id, stored)
    return stored


def count_versions(session: Session, channel_id: int) -> int:
    stmt = select(func.count()).select_from(ChannelIndexDoc).where(ChannelIndexDoc.channel_id == channel_id)
    return int(session.exec(stmt).one())


_CACHE_LOCK = threading.Lock()


def cache_for(state: Any, ttl: float = 1.0) -> IndexCache:
    """The app's index cache (one per app, made on first use)."""
    cache: IndexCache | None = getattr(state, "index_cache", None)
    if cache is None:
        with _CACHE_LOCK:
            cache = getattr(state, "index_cache", None)
            if cache is None:
                cache = IndexCache(ttl)
                state.index_cache = cache
    return cache
