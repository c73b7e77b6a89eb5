"""The device's state on disk: one directory, every write atomic (docs/device.md, "State").

A write goes to a temporary file beside its target, is fsynced, renamed over the target, and
the directory is fsynced. An install writes the new version's directory first and swaps the
``current.json`` pointer last, so a process killed at any instant leaves a state that opens
with a whole model: the old one or the new one. ``Store.open`` removes what a crash left
half-done (temporary files, version directories no pointer names).

Not safe for two processes on one directory at once: a device is one process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from device_sim.errors import StoreError
from packager.errors import UsageError
from packager.fsutil import TMP_MARK, fsync_dir, temporary_beside, write_atomic_with
from packager.manifest import IndexEntry, ModelManifest

# The report kinds the service accepts, the TypeScript client's ReportKind (reports.ts).
ReportKind = Literal["installed", "install_failed", "golden_failed", "transfer_failed", "stale_index",
                     "inference_stats", "behaviour", "shadow"]

Hook = Callable[[str], None]


class Identity(BaseModel):
    """Who the device is and how it talks to its server (device.json, mode 0600)."""

    model_config = ConfigDict(extra="ignore")

    device_id: str
    server: str
    platform: str
    target: str
    fleet: str
    channel: str = "stable"
    token: str
    app_version: str = "0.1.0"
    ort_version: str
    providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"])
    metered: bool = False
    metered_max_bytes: int = 1_000_000
    storage_budget_bytes: int | None = None


class Installed(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    version: int
    target: str
    manifest_sha256: str
    artifact_sha256: str
    artifact_length: int
    installed_at: str


class Held(BaseModel):
    """shadow/<name>/held.json: a verified candidate run beside the model (check 2.7)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    inst: Installed
    report_rows: int
    report_hours: float

    def matches(self, entry: IndexEntry) -> bool:
        """The index entry names this very candidate (version and manifest)."""
        return (self.inst.version, self.inst.manifest_sha256) == (entry.version, entry.manifest.sha256)


class Slot(BaseModel):
    """models/<name>/current.json: the pointer an install swaps (check 5.2)."""

    current: Installed
    previous: Installed | None = None


class Store:
    def __init__(self, root: Path, hook: Hook | None = None) -> None:
        self.root = Path(root)
        # Called between the steps of a write; tests raise from it to simulate a crash there.
        self.hook: Hook = hook or (lambda step: None)

    # ------------------------------------------------------------------ opening

    @classmethod
    def create(cls, root: Path, identity: Identity, root_envelope: dict[str, Any]) -> Store:
        """A new state directory holding the identity and the shipped root (check 1.1 done by caller)."""
        store = cls(root)
        try:
            store.root.mkdir(parents=True, exist_ok=True)
            for sub in ("index", "models", "cache", "queue"):
                (store.root / sub).mkdir(exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create state directory {root}: {exc.strerror}") from None
        store.save_root(root_envelope)
        store.save_identity(identity)
        return store

    @classmethod
    def open(cls, root: Path, hook: Hook | None = None) -> Store:
        store = cls(root, hook)
        if not (store.root / "device.json").is_file():
            raise UsageError(f"{root} is not a registered device (run `modelsync device register`)")
        store.recover()
        return store

    def recover(self) -> None:
        """Remove what a crash left half-done: temporary files, unreferenced version dirs."""
        for path in self.root.rglob(f"*{TMP_MARK}*"):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        models = self.root / "models"
        if not models.is_dir():
            return
        for mdir in models.iterdir():
            slot = self.slot(mdir.name)
            keep = {f"v{i.version}" for i in (slot.current, slot.previous) if i} if slot else set()
            for vdir in mdir.glob("v*"):
                if vdir.name not in keep:
                    shutil.rmtree(vdir, ignore_errors=True)

    # ------------------------------------------------------------------ atomic primitives

    def write_bytes(self, path: Path, data: bytes, mode: int = 0o644) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic_with(
                path, lambda fh: fh.write(data), mode, before_replace=lambda: self.hook(f"write:{path.name}")
            )
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc.strerror}") from None

    def write_json(self, path: Path, obj: Any, mode: int = 0o644) -> None:
        self.write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode(), mode)

    def read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read {path}: {exc}") from None

    # ------------------------------------------------------------------ identity, root, index

    @property
    def identity(self) -> Identity:
        try:
            return Identity.model_validate(self.read_json(self.root / "device.json"))
        except ValidationError as exc:
            raise StoreError(f"{self.root}/device.json is malformed: {exc.errors()[0]['msg']}") from None

    def save_identity(self, identity: Identity) -> None:
        self.write_json(self.root / "device.json", identity.model_dump(), mode=0o600)

    def root_envelope(self) -> dict[str, Any]:
        raw = self.read_json(self.root / "root.json")
        if not isinstance(raw, dict):
            raise StoreError(f"{self.root}/root.json is missing")
        return raw

    def save_root(self, envelope: dict[str, Any]) -> None:
        self.write_json(self.root / "root.json", envelope)

    def saved_index(self, channel: str) -> tuple[dict[str, Any], str | None] | None:
        """The last verified index envelope and its ETag, if any."""
        raw = self.read_json(self.root / "index" / f"{channel}.json")
        if not isinstance(raw, dict):
            return None
        return raw["envelope"], raw.get("etag")

    def save_index(self, channel: str, envelope: dict[str, Any], etag: str | None) -> None:
        self.write_json(self.root / "index" / f"{channel}.json", {"envelope": envelope, "etag": etag})

    def forget_index(self, channel: str) -> None:
        """After the index keys rotate (check 1.5): the old index proves nothing any more."""
        (self.root / "index" / f"{channel}.json").unlink(missing_ok=True)
        fsync_dir(self.root / "index")

    def pack_floor(self, channel: str) -> int | None:
        """The highest channel-index version an installed offline pack carried (check P.2.3):
        neither a pack nor the network may go below it."""
        raw = self.read_json(self.root / "index" / f"{channel}.pack.json")
        return int(raw["version"]) if isinstance(raw, dict) else None

    def save_pack_floor(self, channel: str, version: int, pack_id: str) -> None:
        floor = {"version": version, "pack_id": pack_id}
        self.write_json(self.root / "index" / f"{channel}.pack.json", floor)

    def forget_pack_floor(self, channel: str) -> None:
        """After the offline keys rotate: what the old keys signed proves nothing any more."""
        (self.root / "index" / f"{channel}.pack.json").unlink(missing_ok=True)

    def trusted_index_version(self, channel: str) -> int | None:
        """The version below which no index is accepted (check 2.4, P.2.3): the saved online
        index's or the last pack's, whichever is higher."""
        saved = self.saved_index(channel)
        versions = [int(saved[0]["signed"]["version"])] if saved is not None else []
        floor = self.pack_floor(channel)
        if floor is not None:
            versions.append(floor)
        return max(versions) if versions else None

    def stale_reported(self, channel: str) -> int | None:
        raw = self.read_json(self.root / "index" / f"{channel}.stale.json")
        return int(raw["version"]) if isinstance(raw, dict) else None

    def mark_stale_reported(self, channel: str, version: int) -> None:
        self.write_json(self.root / "index" / f"{channel}.stale.json", {"version": version})

    # ------------------------------------------------------------------ models

    def slot(self, name: str) -> Slot | None:
        raw = self.read_json(self.root / "models" / name / "current.json")
        if raw is None:
            return None
        try:
            return Slot.model_validate(raw)
        except ValidationError as exc:
            raise StoreError(f"models/{name}/current.json is malformed: {exc.errors()[0]['msg']}") from None

    def model_names(self) -> list[str]:
        models = self.root / "models"
        if not models.is_dir():
            return []
        return sorted(p.name for p in models.iterdir() if (p / "current.json").is_file())

    def installed_versions(self) -> dict[str, int]:
        return {n: s.current.version for n in self.model_names() if (s := self.slot(n))}

    def version_dir(self, inst: Installed) -> Path:
        return self.root / "models" / inst.name / f"v{inst.version}"

    def artifact_path(self, inst: Installed) -> Path:
        return self.version_dir(inst) / f"{inst.artifact_sha256}.ort"

    def manifest_path(self, inst: Installed) -> Path:
        return self.version_dir(inst) / "manifest.json"

    def manifest(self, inst: Installed) -> ModelManifest:
        """The installed version's manifest (verified at install, checks 3.2-3.3)."""
        return self._manifest_at(self.manifest_path(inst))

    def held_manifest(self, held: Held) -> ModelManifest:
        """A held shadow candidate's manifest (verified when it was held, check 2.7)."""
        return self._manifest_at(self.held_files(held)[0])

    @staticmethod
    def _manifest_at(path: Path) -> ModelManifest:
        return ModelManifest.model_validate(json.loads(path.read_bytes())["signed"])

    def intact(self, inst: Installed) -> bool:
        """Both files present and the artifact's bytes still hash to what was installed."""
        try:
            data = self.artifact_path(inst).read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            return self.manifest_path(inst).is_file() and digest == inst.artifact_sha256
        except OSError:
            return False

    def usable(self, name: str) -> Installed | None:
        """The model to serve: current if intact, else previous (instant fallback)."""
        slot = self.slot(name)
        if slot is None:
            return None
        return next((i for i in (slot.current, slot.previous) if i and self.intact(i)), None)

    def install(self, inst: Installed, manifest: bytes, artifact: bytes) -> None:
        """checks 5.1-5.3. The caller has verified both documents (checks 3, 4)."""
        vdir = self.version_dir(inst)
        slot = self.slot(inst.name)
        tmp = temporary_beside(vdir)
        try:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            # check 5.1: write beside the installed versions, then fsync files and directory
            self.write_bytes(tmp / "manifest.json", manifest)
            self.hook("install:manifest")
            self.write_bytes(tmp / f"{inst.artifact_sha256}.ort", artifact)
            self.hook("install:artifact")
            if vdir.exists():  # a leftover of a crash after the rename, before the pointer swap
                shutil.rmtree(vdir)
            os.replace(tmp, vdir)
            fsync_dir(vdir.parent)
            self.hook("install:dir")
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StoreError(f"cannot install {inst.name} v{inst.version}: {exc.strerror}") from None
        previous = None
        if slot is not None:
            # reinstalling the same version (a crash before its pointer swap) keeps the older one
            previous = slot.current if slot.current.version != inst.version else slot.previous
        new = Slot(current=inst, previous=previous)
        self.write_json(vdir.parent / "current.json", new.model_dump())  # check 5.2
        self.hook("install:pointer")
        # check 5.3: older versions go; the previous stays for instant fallback
        keep = {f"v{i.version}" for i in (new.current, new.previous) if i}
        for old in vdir.parent.glob("v*"):
            if old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)
        self.discard_partial(inst.artifact_sha256)

    def fall_back(self, name: str) -> Installed | None:
        """Make the previous version current again and never reinstall the current one (its
        behaviour left the manifest's band): one atomic pointer swap, as an install's. Returns
        the version now current, or None when there is no previous to fall back to."""
        slot = self.slot(name)
        if slot is None:
            return None
        self.mark_failed(name, slot.current.version)
        if slot.previous is None or not self.intact(slot.previous):
            return None
        back = Slot(current=slot.previous, previous=None)
        self.write_json(self.version_dir(slot.previous).parent / "current.json", back.model_dump())
        shutil.rmtree(self.version_dir(slot.current), ignore_errors=True)
        return slot.previous

    def usage_bytes(self) -> int:
        """Bytes held by installed models and partial downloads (the storage budget, C.2)."""
        total = 0
        for sub in ("models", "cache", "shadow"):
            for p in (self.root / sub).rglob("*"):
                if p.is_file():
                    total += p.stat().st_size
        return total

    # ------------------------------------------------------------------ held shadow candidates

    def shadow_dir(self, name: str) -> Path:
        return self.root / "shadow" / name

    def hold_shadow(self, held: Held, manifest: bytes, artifact: bytes) -> None:
        """Keep a verified shadow candidate (check 2.7) beside, never in, the model's slot:
        one directory written whole and renamed into place, as an install's version."""
        final = self.shadow_dir(held.inst.name)
        tmp = temporary_beside(final)
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            self.write_bytes(tmp / "manifest.json", manifest)
            self.write_bytes(tmp / f"{held.inst.artifact_sha256}.ort", artifact)
            self.write_json(tmp / "held.json", held.model_dump())
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            fsync_dir(final.parent)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StoreError(f"cannot hold {held.inst.name} v{held.inst.version}: {exc.strerror}") from None
        self.discard_partial(held.inst.artifact_sha256)

    def held_shadow(self, name: str) -> Held | None:
        """The candidate held for ``name``, when its files are whole (else it is dropped)."""
        try:
            raw = self.read_json(self.shadow_dir(name) / "held.json")
            held = Held.model_validate(raw) if raw is not None else None
        except (StoreError, ValidationError):
            held = None
        if held is None or not self._whole(self.shadow_dir(name), held.inst):
            if self.shadow_dir(name).exists():
                self.drop_shadow(name)
            return None
        return held

    @staticmethod
    def _whole(base: Path, inst: Installed) -> bool:
        """Cheap (no hash): the hashes are checked again when the candidate is loaded or installed."""
        art = base / f"{inst.artifact_sha256}.ort"
        return (base / "manifest.json").is_file() and art.is_file() \
            and art.stat().st_size == inst.artifact_length

    def held_files(self, held: Held) -> tuple[Path, Path]:
        """(manifest.json, artifact) of a held candidate."""
        base = self.shadow_dir(held.inst.name)
        return base / "manifest.json", base / f"{held.inst.artifact_sha256}.ort"

    def held_names(self) -> list[str]:
        base = self.root / "shadow"
        return sorted(p.name for p in base.iterdir() if p.is_dir() and TMP_MARK not in p.name) \
            if base.exists() else []

    def drop_shadow(self, name: str) -> None:
        shutil.rmtree(self.shadow_dir(name), ignore_errors=True)

    # ------------------------------------------------------------------ download cache

    def partial_path(self, sha256: str) -> Path:
        return self.root / "cache" / f"{sha256}.part"

    def discard_partial(self, sha256: str) -> None:
        self.partial_path(sha256).unlink(missing_ok=True)

    # ------------------------------------------------------------------ do-not-retry

    def failed(self) -> dict[str, set[int]]:
        raw = self.read_json(self.root / "failed.json") or {}
        return {k: set(v) for k, v in raw.items()}

    def mark_failed(self, name: str, version: int) -> None:
        failed = self.failed()
        failed.setdefault(name, set()).add(version)
        self.write_json(self.root / "failed.json", {k: sorted(v) for k, v in failed.items()})

    # ------------------------------------------------------------------ report queue

    def enqueue(self, kind: ReportKind, *, model: str | None = None, version: int | None = None,
                reason: str | None = None, data: dict[str, Any] | None = None) -> dict[str, Any]:
        from packager.manifest import format_time, utcnow

        event: dict[str, Any] = {"event_id": str(uuid.uuid4()), "kind": kind, "at": format_time(utcnow())}
        for key, value in (("model", model), ("version", version), ("reason", reason), ("data", data)):
            if value is not None:
                event[key] = value
        name = f"{time.time_ns():020d}-{event['event_id']}.json"
        self.write_json(self.root / "queue" / name, event)
        return event

    def queued(self, limit: int = 500) -> Iterator[tuple[Path, dict[str, Any]]]:
        """Oldest first; a file that cannot be read is dropped rather than blocking the queue."""
        for path in sorted((self.root / "queue").glob("*.json"))[:limit]:
            try:
                event = self.read_json(path)
            except StoreError:
                event = None
            if isinstance(event, dict):
                yield path, event
            else:
                path.unlink(missing_ok=True)

    def refuse_report(self, path: Path, event: dict[str, Any], why: str) -> None:
        """Drop an event the service refused on its own, keeping a count and the last one."""
        refused = self.refused_reports()
        self.write_json(self.root / "refused.json", {
            "count": refused["count"] + 1, "last_kind": event.get("kind"), "last_error": why[:300]})
        self.dequeue([path])

    def refused_reports(self) -> dict[str, Any]:
        try:
            found = self.read_json(self.root / "refused.json")
        except StoreError:
            found = None
        return found if isinstance(found, dict) else {"count": 0, "last_kind": None, "last_error": None}

    def dequeue(self, paths: list[Path]) -> None:
        for p in paths:
            p.unlink(missing_ok=True)
        if paths:
            fsync_dir(self.root / "queue")
