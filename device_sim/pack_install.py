"""Installing from an offline pack: the network sync's checks, in the same order, on bytes
read from a ``.mspack`` file instead of the service (docs/device.md, "Installing from a
pack"; docs/offline.md).

    P.1  the container: magic, header, every member's length, decompression and listed sha256
    1.x  the root walk, from the device's own root through the pack's roots (checks 1.2-1.6)
    P.2  the snapshot: offline role threshold, fleet and channel, version not lower than any
         index trusted (online or pack), inside its validity window
    2.6  per model, the entry the device's own bucket (and rules) pick, newer than installed
    3.x  manifest: bytes from the index entry, publisher threshold, name/version, no rollback
    4.x  artifact: length and sha256 from the manifest, golden vectors
    5.x  atomic install; an ``installed`` report queued with ``source: pack``

``plan_pack`` runs P.1 to 4.2 without touching the state (the shared vectors run it in both
languages); ``install_pack`` adds 4.3-5.4. A failed pack-wide check raises and leaves the
state as it was; a failed model is reported as online and the others go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from device_sim import errors, trust
from device_sim.golden import GoldenRunner, run_golden
from device_sim.store import Installed, ReportKind, Store
from packager.manifest import Artifact, IndexEntry, ModelManifest, OfflineIndex, Root, format_time, utcnow
from packager.offline_pack import PackHeader, PackReader


@dataclass
class PlannedModel:
    entry: IndexEntry
    manifest_bytes: bytes | None = None
    manifest: ModelManifest | None = None
    artifact: Artifact | None = None
    artifact_bytes: bytes | None = None
    error: errors.ModelSyncError | None = None

    @property
    def verdict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.entry.model, "version": self.entry.version}
        if self.error is not None:
            return {**out, "outcome": "failed", "reason": errors.error_code(self.error)}
        assert self.artifact is not None
        return {**out, "outcome": "install", "artifact": self.artifact.sha256}


@dataclass
class PackPlan:
    header: PackHeader
    roots: list[dict[str, Any]]  # root envelopes newer than the device's, to save (check 1.5)
    root: Root
    index: OfflineIndex
    models: list[PlannedModel] = field(default_factory=list)
    skipped: list[trust.Skipped] = field(default_factory=list)


@dataclass
class PackResult:
    pack_id: str
    index_version: int
    valid_from: str
    expires: str
    root_version: int
    outcomes: list[dict[str, Any]]
    skipped: list[trust.Skipped]

    @property
    def installed(self) -> list[dict[str, Any]]:
        return [o for o in self.outcomes if o["outcome"] == "installed"]


def _verify_container(reader: PackReader) -> None:
    """check P.1: every member reads back whole and as listed, before anything is trusted,
    so a cut or altered pack is refused as a whole."""
    for member in reader.header.members:
        reader.read(member)


def plan_pack(
    reader: PackReader,
    *,
    trusted_root: dict[str, Any],
    device_id: str,
    fleet: str,
    channel: str,
    target: str,
    runtime: str,
    trusted_version: int | None,
    installed: dict[str, int],
    failed: dict[str, set[int]],
    now: datetime,
) -> PackPlan:
    """checks P.1 to 4.2, pure: what installing this pack would do, or the refusal."""
    _verify_container(reader)  # check P.1
    header = reader.header
    root = trust.trusted_root(trusted_root)  # check 1.1
    offered = {}
    for member in header.of_kind("root"):
        raw = trust.parse_json(reader.read(member), f"pack member {member.name}")
        version = raw.get("signed", {}).get("version") if isinstance(raw, dict) else None
        if isinstance(version, int) and not isinstance(version, bool):
            offered[version] = raw
    newer: list[dict[str, Any]] = []
    step = 1
    while root.version + 1 in offered:  # checks 1.2-1.4, one version at a time
        raw = offered[root.version + 1]
        root = trust.next_root(root, raw, step)
        newer.append(raw)
        step += 1
    trust.final_root(root, now)  # check 1.6
    (index_member,) = header.of_kind("offline-index")
    raw_index = trust.parse_json(reader.read(index_member), "pack's offline index")
    index = trust.check_offline_index(raw_index, root, fleet=fleet, channel=channel,
                                      trusted_version=trusted_version, now=now)  # check P.2
    plan = PackPlan(header=header, roots=newer, root=root, index=index)
    plan.skipped = trust.skipped_entries(index, device_id, installed, failed)
    for entry in trust.wanted_entries(index, device_id, installed, failed):  # check 2.6
        planned = PlannedModel(entry)
        plan.models.append(planned)
        try:
            _plan_model(reader, planned, root, target, runtime, installed.get(entry.model))
        except errors.VerificationError as exc:
            planned.error = exc
    return plan


def _plan_model(
    reader: PackReader, planned: PlannedModel, root: Root, target: str, runtime: str, have: int | None
) -> None:
    entry = planned.entry
    sha = entry.manifest.sha256
    member = reader.header.find("manifest", sha, f"manifests/{sha}.json")
    if member is None:
        raise errors.MixAndMatchError(f"the pack holds no manifest for {entry.model} v{entry.version}")
    data = reader.read(member)
    manifest = trust.check_manifest(data, root, entry, have)  # checks 3.1-3.5
    artifact = trust.select_artifact(manifest, target, runtime)  # checks 3.6, 3.7
    held = reader.header.find("artifact", artifact.sha256, f"artifacts/{artifact.sha256}.{artifact.format}")
    if held is None:
        raise errors.NoArtifactForTargetError(
            f"the pack carries no {target} artifact of {entry.model} v{entry.version} "
            "(exported for other targets)"
        )
    blob = reader.read(held)
    trust.check_artifact(blob, artifact)  # checks 4.1, 4.2
    planned.manifest_bytes, planned.manifest, planned.artifact, planned.artifact_bytes = (
        data, manifest, artifact, blob
    )


def install_pack(
    store: Store,
    path: str | Path,
    *,
    now: Callable[[], datetime] = utcnow,
    golden_runner: GoldenRunner = run_golden,
    runtime: str | None = None,
) -> PackResult:
    """Apply a pack to the device in ``store``: refuses (raising a ``VerificationError``,
    state unchanged) or installs what the device's own rules pick from it."""
    ident = store.identity
    channel = ident.channel
    moment = now()
    with PackReader(path) as reader:
        plan = plan_pack(
            reader,
            trusted_root=store.root_envelope(),
            device_id=ident.device_id, fleet=ident.fleet, channel=channel, target=ident.target,
            runtime=runtime or ident.ort_version, trusted_version=store.trusted_index_version(channel),
            installed=store.installed_versions(), failed=store.failed(), now=moment,
        )
    previous = trust.trusted_root(store.root_envelope())
    for raw in plan.roots:  # check 1.5, as the network walk saves them
        store.save_root(raw)
    if plan.roots and plan.root.roles.get("index") != previous.roles.get("index"):
        store.forget_index(channel)
    index = plan.index
    # P.2 passed: the snapshot is genuine, so neither a pack nor the network may go below it
    store.save_pack_floor(channel, index.version, index.pack_id)
    source = {"source": "pack", "pack_id": index.pack_id, "index_version": index.version}
    outcomes: list[dict[str, Any]] = []
    for planned in plan.models:
        outcomes.append(_install_planned(store, planned, source, moment, golden_runner))
    return PackResult(
        pack_id=index.pack_id, index_version=index.version, valid_from=index.valid_from,
        expires=index.expires, root_version=plan.root.version, outcomes=outcomes, skipped=plan.skipped,
    )


def _install_planned(
    store: Store, planned: PlannedModel, source: dict[str, Any], moment: datetime, golden_runner: GoldenRunner
) -> dict[str, Any]:
    entry = planned.entry
    out: dict[str, Any] = {"model": entry.model, "version": entry.version}
    try:
        if planned.error is not None:
            raise planned.error
        assert planned.manifest is not None and planned.artifact is not None
        assert planned.artifact_bytes is not None and planned.manifest_bytes is not None
        manifest, artifact = planned.manifest, planned.artifact
        labels, scores = golden_runner(planned.artifact_bytes, manifest.golden)  # check 4.3
        trust.check_golden(labels, scores, manifest.golden, artifact.golden_tolerance)  # check 4.4
        inst = Installed(
            name=manifest.name, version=manifest.version, target=artifact.target,
            manifest_sha256=entry.manifest.sha256, artifact_sha256=artifact.sha256,
            artifact_length=artifact.length, installed_at=format_time(moment),
        )
        store.install(inst, planned.manifest_bytes, planned.artifact_bytes)  # checks 5.1-5.3
        store.enqueue("installed", model=inst.name, version=inst.version,  # check 5.4
                      data={"target": artifact.target, "transfer": "pack", "wire_bytes": 0, **source})
        return {**out, "outcome": "installed"}
    except errors.VerificationError as exc:
        kind: ReportKind = "golden_failed" if isinstance(exc, errors.GoldenVectorError) else "install_failed"
        store.enqueue(kind, model=entry.model, version=entry.version, reason=exc.code,
                      data={"detail": str(exc)[:500], **source})
        if isinstance(exc, errors.PERMANENT):
            store.mark_failed(entry.model, entry.version)
        return {**out, "outcome": "failed", "reason": exc.code, "detail": str(exc)}


async def install_pack_async(store: Store, path: str | Path, **kwargs: Any) -> PackResult:
    """For a fleet in one event loop: the same, off the loop's thread."""
    return await asyncio.to_thread(install_pack, store, path, **kwargs)
