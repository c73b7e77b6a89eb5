"""Offline packs from the service's own data (docs/offline.md): the channel's current signed
index, re-issued as an ``offline-index`` signed by the offline role, with the root chain,
the manifests and the artifacts it names, in one ``.mspack`` file.

The snapshot carries the online index's version and entries unchanged, so a device picks
from a pack exactly what it would have picked online at that moment (same rollout buckets,
same rules), and the version counter is shared: a pack can never undercut what the network
already gave a device, nor the network a pack.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import Session

from packager.manifest import ModelManifest, Target, format_time, sign, utcnow
from packager.offline_pack import NewMember, offline_index_signed, write_pack
from sync_service import crud
from sync_service.core.keys import ServiceKeys
from sync_service.errors import (
    NoOfflineKey,
    NothingToPack,
    PayloadTooLarge,
    UnknownChannel,
    UnknownFleet,
    UnknownModel,
    UnknownRoot,
)
from sync_service.index import IndexSigner, current_index
from sync_service.storage import Storage, blob_key


@dataclass(frozen=True)
class PackSummary:
    """What went into a pack (the response headers and the CLI say it)."""

    pack_id: str
    fleet: str
    channel: str
    index_version: int
    valid_from: str
    expires: str
    models: dict[str, list[int]]
    artifacts: int
    size: int


def _members_for(
    storage: Storage, models: dict[str, list[dict[str, Any]]], targets: Sequence[Target] | None
) -> list[NewMember]:
    members: list[NewMember] = []
    seen: set[str] = set()
    for entries in models.values():
        for entry in entries:
            sha = entry["manifest"]["sha256"]
            data = storage.get(blob_key(sha))
            if sha not in seen:
                seen.add(sha)
                members.append(NewMember(f"manifests/{sha}.json", "manifest", data, compress=True))
            manifest = ModelManifest.model_validate(json.loads(data)["signed"])
            for artifact in manifest.artifacts:
                if targets is not None and artifact.target not in targets:
                    continue
                if artifact.sha256 in seen:
                    continue  # one file for targets that share it
                seen.add(artifact.sha256)
                members.append(NewMember(
                    f"artifacts/{artifact.sha256}.{artifact.format}", "artifact",
                    storage.get(blob_key(artifact.sha256)), compress=True,
                ))
    return members


def export_pack(
    out: BinaryIO,
    *,
    session: Session,
    storage: Storage,
    keys: ServiceKeys,
    signer: IndexSigner,
    fleet: str,
    channel: str,
    model: str | None = None,
    targets: Sequence[Target] | None = None,
    from_root: int = 1,
    valid_days: int,
    max_bytes: int,
    now: datetime | None = None,
) -> PackSummary:
    """Write the pack to ``out`` (a temporary file the route streams); refuses with the
    service's errors before writing anything when the request cannot be met."""
    offline_key: Ed25519PrivateKey | None = keys.offline_key
    if offline_key is None:
        raise NoOfflineKey(
            "this service holds no offline-role key: start it with --offline-key KEYS/offline.key "
            "(MODELSYNC_OFFLINE_KEY_PATH), a key root.json names in its offline role"
        )
    root = keys.root
    keyid = keys.offline_keyid()
    if "offline" not in root.roles or keyid not in root.roles["offline"].keyids:
        raise NoOfflineKey(
            f"root v{root.version} names no offline role holding this service's offline key: "
            "add it with modelsync keys rotate --role offline"
        )
    fleet_row = crud.get_fleet(session=session, name=fleet)
    if fleet_row is None or fleet_row.id is None:
        raise UnknownFleet(f"no fleet {fleet!r}")
    channel_row = crud.get_channel(session=session, fleet_id=fleet_row.id, name=channel)
    if channel_row is None:
        raise UnknownChannel(f"no channel {channel!r} in fleet {fleet!r}")
    stored = current_index(session, channel_row, signer, now=now)
    signed = json.loads(stored.body)["signed"]
    models: dict[str, list[dict[str, Any]]] = signed["models"]
    if model is not None:
        if model not in models:
            raise UnknownModel(f"channel {fleet}/{channel} has no model {model!r} in its index")
        models = {model: models[model]}
    models = {name: entries for name, entries in models.items() if entries}
    if not models:
        raise NothingToPack(f"channel {fleet}/{channel} has no active release to carry")
    if from_root > root.version:
        raise UnknownRoot(f"from_root {from_root}: the newest root is v{root.version}")

    moment = now or utcnow()
    pack_id = secrets.token_hex(16)
    valid_from = format_time(moment)
    expires = format_time(moment + timedelta(days=valid_days))
    snapshot = sign(offline_index_signed(
        fleet=fleet, channel=channel, version=stored.version, valid_from=valid_from,
        expires=expires, pack_id=pack_id, models=models,
    ), [offline_key])
    members: list[NewMember] = []
    for version in range(from_root, root.version + 1):
        path = keys.root_file(version)
        if path is not None:
            members.append(NewMember(f"roots/{version}.root.json", "root", Path(path).read_bytes()))
    members.append(NewMember("offline-index.json", "offline-index",
                             json.dumps(snapshot, sort_keys=True).encode()))
    payload = _members_for(storage, models, targets)
    if sum(len(m.data) for m in payload) > max_bytes:
        raise PayloadTooLarge(
            f"the pack would carry more than {max_bytes} bytes: choose a --model or --target"
        )
    members += payload
    size = write_pack(out, fleet=fleet, channel=channel, created=valid_from, members=members)
    return PackSummary(
        pack_id=pack_id, fleet=fleet, channel=channel, index_version=stored.version,
        valid_from=valid_from, expires=expires,
        models={name: [int(e["version"]) for e in entries] for name, entries in models.items()},
        artifacts=sum(m.kind == "artifact" for m in payload), size=size,
    )
