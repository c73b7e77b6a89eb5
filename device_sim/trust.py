"""The device's trust checks, in the numbered order of docs/device.md. Pure: no I/O.

Each function takes bytes or parsed documents that the updater fetched and either returns
what may now be trusted or raises one precise ``VerificationError`` leaf (the tree is
drawn in ``device_sim.errors``). The updater saves
nothing until a check has passed, so a raise here always leaves the device's state as it was.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from device_sim.errors import (
    ExpiredError,
    FormatError,
    GoldenVectorError,
    HashMismatchError,
    LengthMismatchError,
    MixAndMatchError,
    ModelRollbackError,
    NoArtifactForTargetError,
    RollbackError,
    RootChainError,
    RuntimeTooOldError,
    StaleIndexError,
    StalePackError,
    WrongChannelError,
)
from packager.manifest import (
    Artifact,
    ChannelIndex,
    FileRef,
    GoldenTolerance,
    GoldenVectors,
    IndexEntry,
    ModelManifest,
    OfflineIndex,
    Root,
    check_expiry,
    parse_time,
    verify_index,
    verify_manifest,
    verify_offline_index,
    verify_root_self,
    verify_root_signed_by,
)
from packager.rollout import pick_entry, rollout_bucket

MAX_ROOT_STEPS = 32
# Why check 2.6 passes over a model: no entry's rollout takes this device, the entry is not
# newer than what is installed, or that version failed a permanent check here before.
SkipReason = Literal["outside_rollout", "not_newer", "known_bad"]
PLATFORM_TARGETS: dict[str, str] = {"android": "android-nnapi", "ios": "ios-coreml", "linux": "cpu"}


def parse_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{what} is not valid JSON: {exc}") from None


# --------------------------------------------------------------------------- 1. root


def trusted_root(raw: Any) -> Root:
    """check 1.1: the shipped (or saved) root, signed by a threshold of its own root keys.
    Expiry is check 1.6, after any newer roots were fetched."""
    return verify_root_self(raw)


def next_root(trusted: Root, raw: Any, steps: int = 1) -> Root:
    """checks 1.2-1.4 for one step of the root walk. Exactly v(N+1), checked before the
    signatures: a replayed or older root is a rollback, a later one would skip the keys
    of the versions between; both are refused here and nowhere else."""
    if steps > MAX_ROOT_STEPS:  # check 1.2
        raise RootChainError(f"more than {MAX_ROOT_STEPS} root versions in one update")
    version = raw.get("signed", {}).get("version") if isinstance(raw, dict) else None
    if version != trusted.version + 1:  # check 1.2
        raise RootChainError(
            f"server answered root v{version} when asked for v{trusted.version + 1}"
        )
    return verify_root_signed_by(trusted, raw)  # checks 1.3, 1.4


def final_root(root: Root, now: datetime | None = None) -> Root:
    """check 1.6"""
    check_expiry(root.expires, now, f"root v{root.version}")
    return root


# --------------------------------------------------------------------------- 2. index


def check_index(
    raw: Any,
    root: Root,
    *,
    fleet: str,
    channel: str,
    trusted_version: int | None,
    now: datetime | None = None,
) -> ChannelIndex:
    """checks 2.1-2.5. A genuine but expired index raises ``StaleIndexError`` carrying it."""
    index = verify_index(raw, root)  # checks 2.1, 2.2
    if index.fleet != fleet or index.channel != channel:  # check 2.3
        raise WrongChannelError(
            f"index is for {index.fleet}/{index.channel}, this device follows {fleet}/{channel}"
        )
    if trusted_version is not None and index.version < trusted_version:  # check 2.4
        raise RollbackError(f"channel index v{index.version} is older than trusted v{trusted_version}")
    try:
        check_expiry(index.expires, now, f"channel index v{index.version}")  # check 2.5
    except ExpiredError as exc:
        raise StaleIndexError(str(exc), index) from None
    return index


# The longest validity window a device accepts on a pack's snapshot: a pack signed to live
# for years would be a freeze waiting to happen (docs/offline.md, docs/security.md).
MAX_PACK_WINDOW = timedelta(days=366)


def check_offline_index(
    raw: Any,
    root: Root,
    *,
    fleet: str,
    channel: str,
    trusted_version: int | None,
    now: datetime | None = None,
) -> OfflineIndex:
    """check P.2 (an offline pack's snapshot, docs/device.md "Installing from a pack"): the
    offline role's threshold, this device's fleet and channel, a version not lower than any
    index it trusts (online or from a pack), now inside the window, a window not too long."""
    index = verify_offline_index(raw, root)  # P.2.1: offline role, threshold
    if index.fleet != fleet or index.channel != channel:  # P.2.2
        raise WrongChannelError(
            f"pack is for {index.fleet}/{index.channel}, this device follows {fleet}/{channel}"
        )
    if trusted_version is not None and index.version < trusted_version:  # P.2.3
        raise RollbackError(
            f"pack carries channel index v{index.version}, older than trusted v{trusted_version}"
        )
    start, end = parse_time(index.valid_from), parse_time(index.expires)
    if end - start > MAX_PACK_WINDOW or end <= start:  # P.2.4
        raise FormatError(
            f"pack is valid from {index.valid_from} to {index.expires}: a window must be positive "
            f"and at most {MAX_PACK_WINDOW.days} days"
        )
    moment = now or datetime.now(UTC)
    if not start <= moment < end:  # P.2.5
        when = "not valid before" if moment < start else "expired at"
        raise StalePackError(
            f"pack {index.pack_id[:8]}… is {when} {index.valid_from if moment < start else index.expires}"
        )
    return index


def wanted_entries(
    index: ChannelIndex | OfflineIndex,
    device_id: str,
    installed: dict[str, int],
    failed: dict[str, set[int]],
) -> list[IndexEntry]:
    """check 2.6: per model, the device's entry, unless installed already, older than the
    installed version, or known bad. Older: a halted release leaves the devices that took it
    on that version while the index falls back to the previous one; they keep what they run
    (check 3.5 refuses it again should a manifest claim otherwise)."""
    out: list[IndexEntry] = []
    for name in sorted(index.models):
        entry = pick_entry(index.models[name], device_id)
        if entry is None or entry.model != name:
            continue
        if entry.version <= installed.get(name, 0) or entry.version in failed.get(name, set()):
            continue
        out.append(entry)
    return out


@dataclass(frozen=True)
class Skipped:
    """Why check 2.6 passed over a model of the index (the sync's "why nothing")."""

    model: str
    version: int  # the newest entry's version
    reason: SkipReason
    detail: str
    bucket: int | None = None  # the device's rollout bucket (0..9999) for that entry
    percent: float | None = None


def skipped_entries(
    index: ChannelIndex | OfflineIndex,
    device_id: str,
    installed: dict[str, int],
    failed: dict[str, set[int]],
) -> list[Skipped]:
    """The models ``wanted_entries`` leaves out, each with the reason it did."""
    out: list[Skipped] = []
    for name in sorted(index.models):
        entries = index.models[name]
        entry = pick_entry(entries, device_id)
        if entry is not None and entry.model != name:
            continue  # wanted_entries ignores a mislabelled entry too
        if entry is None:
            if not entries:
                continue
            newest = entries[0]
            bucket = rollout_bucket(newest.rollout.salt, device_id)
            out.append(Skipped(name, newest.version, "outside_rollout",
                               f"v{newest.version} is rolled out to {newest.rollout.percent:g}% "
                               f"(buckets below {newest.rollout.percent * 100:g} of 10000); this "
                               f"device's bucket is {bucket}", bucket, newest.rollout.percent))
            continue
        have = installed.get(name, 0)
        if entry.version <= have:
            why = "installed" if entry.version == have else f"older than installed v{have}"
            out.append(Skipped(name, entry.version, "not_newer", f"v{entry.version} is {why}"))
        elif entry.version in failed.get(name, set()):
            out.append(Skipped(name, entry.version, "known_bad",
                               f"v{entry.version} failed a permanent check here before (runtime too old, "
                               "no artifact for this target, unloadable or golden vectors): not retried"))
    return out


# --------------------------------------------------------------------------- 3. manifest


def check_manifest_bytes(data: bytes, ref: FileRef) -> None:
    """check 3.1"""
    if len(data) != ref.length:
        raise MixAndMatchError(f"manifest is {len(data)} bytes, the index entry says {ref.length}")
    got = hashlib.sha256(data).hexdigest()
    if got != ref.sha256:
        raise MixAndMatchError(f"manifest sha256 {got[:12]}… is not the index entry's {ref.sha256[:12]}…")


def check_manifest_signed(raw: Any, root: Root) -> ModelManifest:
    """checks 3.2, 3.3: a model manifest, signed by a threshold of the publisher keys."""
    return verify_manifest(raw, root)


def check_manifest(
    data: bytes, root: Root, entry: IndexEntry, installed_version: int | None
) -> ModelManifest:
    """checks 3.1-3.5"""
    check_manifest_bytes(data, entry.manifest)  # check 3.1
    manifest = check_manifest_signed(parse_json(data, "manifest"), root)  # checks 3.2, 3.3
    if manifest.name != entry.model or manifest.version != entry.version:  # check 3.4
        raise MixAndMatchError(
            f"manifest is {manifest.name} v{manifest.version}, "
            f"the index entry names {entry.model} v{entry.version}"
        )
    if installed_version is not None and manifest.version < installed_version:  # check 3.5
        raise ModelRollbackError(
            f"{manifest.name} v{manifest.version} is older than installed v{installed_version}"
        )
    return manifest


def _major_minor(version: str) -> tuple[int, int]:
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise FormatError(f"bad onnxruntime version {version!r}") from None


def artifact_for_target(manifest: ModelManifest, target: str, *, quantize: bool = False) -> Artifact | None:
    """The one artifact-selection rule, for syncing and for running a bundle alike: the
    first artifact the manifest lists for ``target`` (the packager lists the precision it
    chose for that target), or with ``quantize`` (ONNX_QUANTIZE) its int8 one where it
    has one. The TypeScript client's ``selectArtifact`` takes the first too."""
    listed = [a for a in manifest.artifacts if a.target == target]
    if quantize:
        listed = [a for a in listed if a.precision == "int8"] + listed
    return listed[0] if listed else None


def select_artifact(manifest: ModelManifest, target: str, runtime_version: str) -> Artifact:
    """checks 3.6, 3.7"""
    artifact = artifact_for_target(manifest, target)
    if artifact is None:  # check 3.6
        have = ", ".join(a.target for a in manifest.artifacts)
        raise NoArtifactForTargetError(
            f"{manifest.name} v{manifest.version} has no artifact for {target} (has {have})"
        )
    if _major_minor(artifact.ort_version) > _major_minor(runtime_version):  # check 3.7
        raise RuntimeTooOldError(
            f"{manifest.name} v{manifest.version} {target} was written by onnxruntime "
            f"{artifact.ort_version}; this device runs {runtime_version}"
        )
    return artifact


# --------------------------------------------------------------------------- 4. artifact


def check_length_so_far(received: int, declared: int, what: str = "artifact") -> None:
    """check 4.1, called on every chunk: abort as soon as more arrives than declared."""
    if received > declared:
        raise LengthMismatchError(f"{what}: server sent more than the declared {declared} bytes")


def check_artifact(data: bytes, artifact: Artifact) -> None:
    """checks 4.1 (final length), 4.2"""
    if len(data) != artifact.length:
        raise LengthMismatchError(f"artifact is {len(data)} bytes, the manifest says {artifact.length}")
    got = hashlib.sha256(data).hexdigest()
    if got != artifact.sha256:
        raise HashMismatchError(f"artifact sha256 {got[:12]}… is not the manifest's {artifact.sha256[:12]}…")


def check_golden(
    labels: Sequence[int],
    scores: Sequence[float],
    golden: GoldenVectors,
    tolerance: GoldenTolerance,
) -> float:
    """check 4.4. Returns the largest score difference seen."""
    n = len(golden.inputs)
    if len(labels) != n or len(scores) != n or len(golden.label) != n or len(golden.score) != n:
        raise GoldenVectorError(
            f"golden vectors: {n} inputs but {len(labels)} labels / {len(scores)} scores out "
            f"({len(golden.label)} / {len(golden.score)} expected)"
        )
    mismatches = sum(int(a) != int(b) for a, b in zip(labels, golden.label, strict=True))
    diffs = [abs(float(a) - float(b)) for a, b in zip(scores, golden.score, strict=True)]
    worst = max(diffs)
    if any(math.isnan(d) for d in diffs):
        raise GoldenVectorError("golden vectors: the model produced NaN scores")
    if mismatches > tolerance.max_label_mismatches:
        raise GoldenVectorError(
            f"golden vectors: {mismatches} label mismatches, tolerance is {tolerance.max_label_mismatches}"
        )
    if worst > tolerance.score_atol:
        raise GoldenVectorError(
            f"golden vectors: max score difference {worst:.3g} exceeds tolerance {tolerance.score_atol:.3g}"
        )
    return worst
