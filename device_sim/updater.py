"""One sync, as the steps of docs/device.md in check order: root walk, index, then per
model manifest, artifact bytes, golden vectors and install; then the queued reports.

Everything is checked by ``device_sim.trust`` before ``device_sim.store`` saves it; the
check numbers cited here are the doc's, and the order is that of the TypeScript client's
``client.ts``. Bytes come through ``device_sim.transfer`` (capped, resumable, decompressing
reads) and ``device_sim.delta``. The core is async (``httpx.AsyncClient``) so one process
can run a fleet; ``device_sim.device.Device`` wraps it for a single device.

The client is injected, so tests hand it the real app in-process (``httpx.ASGITransport``),
a real server on loopback, a fault-injecting transport or an attacker's server.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import httpx

from device_sim import errors, trust
from device_sim.delta import apply_delta
from device_sim.errors import (
    DownloadError,
    HashMismatchError,
    LengthMismatchError,
    MixAndMatchError,
    ModelSyncError,
    SlowRetrievalError,
    VerificationError,
)
from device_sim.golden import GoldenRunner, run_golden
from device_sim.reports import flush_reports
from device_sim.store import Held, Identity, Installed, ReportKind, Store
from device_sim.transfer import Http, Progress, SyncConfig, Transfer, TransferKind
from packager.manifest import (
    MAX_MANIFEST_BYTES,
    Artifact,
    ChannelIndex,
    IndexEntry,
    ModelManifest,
    Root,
    ShadowEntry,
    format_time,
    utcnow,
)
from packager.rollout import pick_shadow

MAX_ROOT_BYTES = 1 << 20
MAX_INDEX_BYTES = 8 << 20
# A model's bytes that arrived damaged or cut are fetched once more, from byte 0 after a
# mismatch, before the failure is reported (as transfer_failed): one bit flipped on the path
# must neither halt a rollout nor cost a poll interval.
TRANSFER_ATTEMPTS = 2


# The words are the TypeScript client's (react-native-stub/src/core/client.ts):
# ModelResult.outcome there is ModelOutcome.outcome here; a sync stopped by a failed check
# or unreadable state is "failed" on both sides, one stopped by the network "offline".
# held: a shadow candidate verified and kept beside the model (check 2.7).
ModelOutcomeKind = Literal["installed", "deferred", "failed", "held"]
# ok: a fresh index was read and acted on; not_modified: the server answered 304 (the
# client's notModified); stale: a genuine but expired index (check 2.5), nothing installed.
SyncStatus = Literal["ok", "not_modified", "stale", "failed", "offline"]
# Why a model waits (C.1, C.2); a failed model's reason is its error's code instead.
DeferReason = Literal["metered", "storage_budget"]


DEFER_DETAIL: dict[DeferReason, str] = {
    "metered": "deferred on a metered link until Wi-Fi (not urgent, larger than metered_max_bytes)",
    "storage_budget": "deferred: the installed models and this artifact would exceed the storage budget",
}


class _Damaged(Exception):
    """A model's manifest or artifact bytes failed the way a path attacker can make them
    fail (cut, undecodable, wrong length or hash): retried, then a transfer_failed report."""

    def __init__(self, cause: ModelSyncError) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass
class ModelOutcome:
    model: str
    version: int
    outcome: ModelOutcomeKind
    reason: str | None = None  # DeferReason when deferred, else the error's code
    detail: str = ""
    transfer: TransferKind | None = None
    wire_bytes: int = 0
    transport: bool = False  # failed as a transfer (the path's doing), not as a verified model


@dataclass
class SyncResult:
    status: SyncStatus = "ok"
    root_version: int | None = None
    index_version: int | None = None
    outcomes: list[ModelOutcome] = field(default_factory=list)
    skipped: list[trust.Skipped] = field(default_factory=list)  # check 2.6's "why not"
    shadows: list[ModelOutcome] = field(default_factory=list)  # check 2.7: candidates held or failed
    reports_sent: int = 0
    error: str | None = None
    error_code: str | None = None
    refused: bool = False  # the sync stopped at a failed trust check, not the network
    wire_bytes: int = 0

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "not_modified")

    @property
    def installed(self) -> list[ModelOutcome]:
        return [o for o in self.outcomes if o.outcome == "installed"]


def next_delay(interval: float, failures: int, rng: random.Random, max_backoff: float = 3600.0) -> float:
    """Seconds to the next poll: jittered interval, or exponential backoff after failures."""
    if failures <= 0:
        return interval * rng.uniform(0.8, 1.2)
    return float(min(max_backoff, interval * 2 ** min(failures, 30)) * rng.uniform(0.5, 1.0))


class Updater:
    def __init__(
        self,
        store: Store,
        client: httpx.AsyncClient,
        *,
        config: SyncConfig | None = None,
        runtime: str | None = None,
        now: Callable[[], datetime] = utcnow,
        golden_runner: GoldenRunner = run_golden,
        progress: Progress | None = None,
        fresh_client: Callable[[], httpx.AsyncClient] | None = None,
    ) -> None:
        self.store = store
        self.client = client
        # a client with a pool of its own, for a damaged transfer's retry (None: reuse client)
        self.fresh_client = fresh_client
        self.config = config or SyncConfig()
        self.identity: Identity = store.identity
        self.http = Http(client, self.config, self.identity.token)
        self.runtime = runtime or self.identity.ort_version
        self.now = now
        self.golden_runner = golden_runner
        self.progress = progress

    # ------------------------------------------------------------------ one sync

    async def sync_once(self) -> SyncResult:
        """Root walk, index, models; then send queued reports. Never raises for a failed
        check or a network failure: they land in the result (and the state is unchanged)."""
        result = SyncResult()
        try:
            async with asyncio.timeout(self.config.deadline):
                await self._sync(result)
        except TimeoutError:
            self._fail(result, SlowRetrievalError(f"sync passed its {self.config.deadline:g}s deadline"))
        except DownloadError as exc:
            self._fail(result, exc, offline=True)
        except (VerificationError, ModelSyncError) as exc:
            self._fail(result, exc)
        try:
            async with asyncio.timeout(self.config.deadline):
                result.reports_sent = await self.flush_reports()
        except (TimeoutError, DownloadError):
            pass  # the queue waits for the next sync
        return result

    @staticmethod
    def _fail(result: SyncResult, exc: Exception, offline: bool = False) -> None:
        result.status = "offline" if offline else "failed"
        result.error = str(exc)
        result.error_code = errors.error_code(exc)
        result.refused = isinstance(exc, VerificationError)

    async def _sync(self, result: SyncResult) -> None:
        root = await self.update_root()
        result.root_version = root.version
        index = await self.update_index(root, result)
        if index is None:
            return
        result.index_version = index.version
        installed = self.store.installed_versions()
        failed = self.store.failed()
        result.skipped = trust.skipped_entries(index, self.identity.device_id, installed, failed)
        for entry in trust.wanted_entries(index, self.identity.device_id, installed, failed):  # check 2.6
            outcome = await self.update_model(entry, root)
            result.outcomes.append(outcome)
            result.wire_bytes += outcome.wire_bytes
        await self._sync_shadows(index, root, result)

    async def _sync_shadows(self, index: ChannelIndex, root: Root, result: SyncResult) -> None:
        """check 2.7: hold each model's shadow candidate; drop those the index no longer names."""
        installed, failed = self.store.installed_versions(), self.store.failed()
        for name in sorted(set(index.shadows) | set(self.store.held_names())):
            entry = pick_shadow(index.shadows.get(name, []), self.identity.device_id, installed.get(name, 0),
                                failed.get(name, set()))
            held = self.store.held_shadow(name)
            if entry is None or entry.model != name:
                self.store.drop_shadow(name)
            elif held is None or not held.matches(entry):
                outcome = await self.update_model(entry, root, shadow=entry)
                result.shadows.append(outcome)
                result.wire_bytes += outcome.wire_bytes

    # ------------------------------------------------------------------ 1. root

    async def update_root(self) -> Root:
        root = trust.trusted_root(self.store.root_envelope())  # check 1.1
        for step in range(1, trust.MAX_ROOT_STEPS + 2):
            resp = await self.http.get(f"/v1/root/{root.version + 1}.json", auth=False)
            if resp.status_code == 404:
                await self.http.discard(resp)
                break
            if resp.status_code != 200:
                await self.http.refuse(resp, f"root v{root.version + 1}")
            raw = trust.parse_json(await self.http.read(resp, MAX_ROOT_BYTES, "root"), "root")
            new = trust.next_root(root, raw, step)  # checks 1.2-1.4
            if new.roles.get("index") != root.roles.get("index"):
                # The index keys changed: an index signed by the old keys with an inflated
                # version must not lock the device out (TUF's fast-forward recovery).
                self.store.forget_index(self.identity.channel)
            if new.roles.get("offline") != root.roles.get("offline"):
                self.store.forget_pack_floor(self.identity.channel)  # the same, for packs
            self.store.save_root(raw)  # check 1.5
            root = new
        return trust.final_root(root, self.now())  # check 1.6

    # ------------------------------------------------------------------ 2. index

    async def update_index(self, root: Root, result: SyncResult) -> ChannelIndex | None:
        ident = self.identity
        saved = self.store.saved_index(ident.channel)
        trusted_version: int | None = None
        headers = dict(self.http.auth)
        if saved is not None:
            etag = saved[1]
            if etag:
                headers["If-None-Match"] = etag
        # check 2.4 against the saved index and any offline pack installed since (P.2.3)
        trusted_version = self.store.trusted_index_version(ident.channel)
        resp = await self.http.get(f"/v1/channels/{ident.channel}/index", headers=headers)  # check 2.1
        if resp.status_code == 304 and saved is not None:
            await self.http.discard(resp)
            raw, etag, fresh = saved[0], saved[1], False
            result.status = "not_modified"
        elif resp.status_code == 200:
            body = await self.http.read(resp, MAX_INDEX_BYTES, "channel index")
            raw = trust.parse_json(body, "channel index")
            etag, fresh = resp.headers.get("etag"), True
        else:
            await self.http.refuse(resp, "channel index")
        try:
            index = trust.check_index(raw, root, fleet=ident.fleet, channel=ident.channel,
                                      trusted_version=trusted_version, now=self.now())  # checks 2.1-2.5
        except errors.StaleIndexError as exc:
            result.status = "stale"
            result.error, result.error_code = str(exc), exc.code
            result.index_version = exc.index.version
            if self.store.stale_reported(ident.channel) != exc.index.version:
                self.store.enqueue("stale_index", reason="stale_index",
                                   data={"index_version": exc.index.version, "expires": exc.index.expires})
                self.store.mark_stale_reported(ident.channel, exc.index.version)
            return None
        saved_version = int(saved[0]["signed"]["version"]) if saved is not None else None
        if fresh and (saved_version is None or index.version > saved_version):
            self.store.save_index(ident.channel, raw, etag)
        return index

    # ------------------------------------------------------------------ 3-5. one model

    async def update_model(self, entry: IndexEntry, root: Root,
                           shadow: ShadowEntry | None = None) -> ModelOutcome:
        """Checks 3-5 for one entry; with ``shadow``, checks 3-4 and the candidate is held (2.7)."""
        out = ModelOutcome(entry.model, entry.version, "failed")
        transfer = Transfer()
        try:
            for attempt in range(1, TRANSFER_ATTEMPTS + 1):
                try:
                    if attempt == 1 or self.fresh_client is None:
                        await self._install_entry(entry, root, out, transfer, shadow)
                    else:
                        await self._install_on_fresh_connection(entry, root, out, transfer, shadow)
                    break
                except _Damaged:
                    if attempt == TRANSFER_ATTEMPTS:
                        raise
                    transfer.kind = "full"  # the retry's own way of coming, reported if it lands
        except _Damaged as damaged:
            # Bytes anyone on the path can spoil or cut without a key: a transport failure,
            # never counted against the model by the health gate (docs/protocol.md).
            exc = damaged.cause
            out.reason, out.detail, out.transport = errors.error_code(exc), str(exc), True
            self.store.enqueue("transfer_failed", model=entry.model, version=entry.version, reason=out.reason,
                               data={"detail": str(exc)[:500], "attempts": TRANSFER_ATTEMPTS})
        except VerificationError as exc:
            out.reason, out.detail = errors.error_code(exc), str(exc)
            golden = isinstance(exc, errors.GoldenVectorError)
            kind: ReportKind = "golden_failed" if golden else "install_failed"
            self.store.enqueue(kind, model=entry.model, version=entry.version, reason=out.reason,
                               data={"detail": str(exc)[:500]})
            if isinstance(exc, errors.PERMANENT):
                self.store.mark_failed(entry.model, entry.version)
        finally:
            out.transfer, out.wire_bytes = transfer.kind, transfer.wire
        return out

    async def _install_on_fresh_connection(self, entry: IndexEntry, root: Root, out: ModelOutcome,
                                           transfer: Transfer, shadow: ShadowEntry | None) -> None:
        """The retry after damaged bytes goes over a new connection, never the pooled one
        that carried them: a connection a middlebox has desynchronised stays out of it."""
        assert self.fresh_client is not None
        pooled = self.http
        async with self.fresh_client() as client:
            self.http = Http(client, self.config, self.identity.token)
            try:
                await self._install_entry(entry, root, out, transfer, shadow)
            finally:
                self.http = pooled

    async def _install_entry(self, entry: IndexEntry, root: Root, out: ModelOutcome,
                             transfer: Transfer, shadow: ShadowEntry | None = None) -> None:
        held = self.store.held_shadow(entry.model) if shadow is None else None
        if held is not None and held.matches(entry):
            # a promoted shadow: the files it holds, checked again from 3.1, with no download
            manifest_bytes, manifest, artifact, data = self._held_bytes(held, entry, root)
            transfer.kind = "held"
        else:
            manifest_bytes, manifest, artifact = await self._fetch_manifest(entry, root, transfer)
            deferred = self._deferred(entry, artifact)
            if deferred:
                out.outcome, out.reason = "deferred", deferred
                out.detail = DEFER_DETAIL[deferred]
                return
            try:
                data = await self._fetch_artifact(artifact, entry.model, transfer)
            except (DownloadError, LengthMismatchError, HashMismatchError) as exc:
                if not isinstance(exc, DownloadError) or exc.damaged:
                    # a mismatch or an undecodable body: the partial file is poisoned, the retry
                    # starts from byte 0; a plain cut keeps it and the retry resumes it
                    self.store.partial_path(artifact.sha256).unlink(missing_ok=True)
                raise _Damaged(exc) from None
        labels, scores = await asyncio.to_thread(self.golden_runner, data, manifest.golden)  # 4.3
        trust.check_golden(labels, scores, manifest.golden, artifact.golden_tolerance)  # check 4.4
        inst = Installed(
            name=manifest.name, version=manifest.version, target=artifact.target,
            manifest_sha256=entry.manifest.sha256, artifact_sha256=artifact.sha256,
            artifact_length=artifact.length, installed_at=format_time(self.now()),
        )
        if shadow is not None:
            self.store.hold_shadow(Held(inst=inst, report_rows=shadow.report_after.rows,
                                        report_hours=shadow.report_after.hours), manifest_bytes, data)
            out.outcome, out.reason, out.detail = "held", None, ""
            return
        self.store.install(inst, manifest_bytes, data)  # checks 5.1-5.3
        if held is not None:
            self.store.drop_shadow(entry.model)  # installed now, or outdated by this version
        self.store.enqueue("installed", model=inst.name, version=inst.version,  # check 5.4
                           data={"target": artifact.target, "transfer": transfer.kind,
                                 "wire_bytes": transfer.wire})
        out.outcome, out.reason, out.detail = "installed", None, ""

    def _held_bytes(self, held: Held, entry: IndexEntry,
                    root: Root) -> tuple[bytes, ModelManifest, Artifact, bytes]:
        manifest_path, artifact_path = self.store.held_files(held)
        try:
            manifest_bytes, data = manifest_path.read_bytes(), artifact_path.read_bytes()
        except OSError as exc:
            raise errors.StoreError(f"held {held.inst.name} v{held.inst.version}: {exc.strerror}") from None
        slot = self.store.slot(entry.model)
        manifest = trust.check_manifest(manifest_bytes, root, entry, slot.current.version if slot else None)
        artifact = trust.select_artifact(manifest, self.identity.target, self.runtime)  # 3.6, 3.7
        trust.check_artifact(data, artifact)  # checks 4.1, 4.2
        return manifest_bytes, manifest, artifact, data

    def _deferred(self, entry: IndexEntry, artifact: Artifact) -> DeferReason | None:
        ident = self.identity
        if ident.metered and not entry.urgent and artifact.length > ident.metered_max_bytes:  # C.1
            return "metered"
        budget = ident.storage_budget_bytes
        part = self.store.partial_path(artifact.sha256)
        resumed = part.stat().st_size if part.exists() else 0  # already counted in usage
        if budget is not None and self.store.usage_bytes() - resumed + artifact.length > budget:  # C.2
            return "storage_budget"
        return None

    async def _fetch_manifest(
        self, entry: IndexEntry, root: Root, transfer: Transfer
    ) -> tuple[bytes, ModelManifest, Artifact]:
        if entry.manifest.length > MAX_MANIFEST_BYTES:  # signed by the index key: not the path's doing
            raise errors.FormatError(f"manifest {entry.model} v{entry.version} is declared "
                                     f"{entry.manifest.length} bytes, more than the {MAX_MANIFEST_BYTES} "
                                     "a device reads (packager.manifest.MAX_MANIFEST_BYTES)")
        try:
            resp = await self.http.get(f"/v1/{entry.manifest.path}")
            if resp.status_code != 200:
                await self.http.refuse(resp, f"manifest {entry.model} v{entry.version}")
            # check 3.1: one byte past the entry's length is enough to know it is not that manifest
            data = await self.http.read(resp, entry.manifest.length + 1, "manifest", strict=False)
            transfer.wire += len(data)
            trust.check_manifest_bytes(data, entry.manifest)  # check 3.1: what the path may spoil
        except (DownloadError, MixAndMatchError) as exc:
            raise _Damaged(exc) from None
        slot = self.store.slot(entry.model)
        manifest = trust.check_manifest(data, root, entry,
                                        slot.current.version if slot else None)  # checks 3.1-3.5
        artifact = trust.select_artifact(manifest, self.identity.target, self.runtime)  # 3.6, 3.7
        return data, manifest, artifact

    # ------------------------------------------------------------------ 4. artifact bytes

    async def _fetch_artifact(self, artifact: Artifact, model: str, transfer: Transfer) -> bytes:
        delta = await self._try_delta(artifact, model, transfer)
        if delta is not None:
            return delta
        part = self.store.partial_path(artifact.sha256)
        for _attempt in range(2):  # a second go only after the server refused our Range
            if await self.http.download_to_part(artifact, part, transfer, self.progress):
                return self._finish(artifact)
        raise DownloadError(f"artifact {artifact.sha256[:12]}…: server refuses the resumed range")

    async def _try_delta(self, artifact: Artifact, model: str, transfer: Transfer) -> bytes | None:
        """A bsdiff4 patch from the installed artifact; any problem means a full download."""
        current = self.store.usable(model)
        if current is None or current.target != artifact.target or current.artifact_sha256 == artifact.sha256:
            return None
        if self.store.partial_path(artifact.sha256).exists():
            return None  # a resumable full download is already under way
        try:
            resp = await self.http.get(f"/v1/blobs/{artifact.sha256}/delta",
                                       params={"from": current.artifact_sha256},
                                       headers={**self.http.auth, "Accept-Encoding": "identity"})
            if resp.status_code != 200 or resp.headers.get("x-delta-from") != current.artifact_sha256:
                await self.http.discard(resp)
                return None
            # A patch larger than the artifact is no delta worth taking (check 4.1 cap).
            patch = await self.http.read(resp, artifact.length + 1, "delta", strict=False)
            transfer.wire += len(patch)
            if len(patch) > artifact.length:
                return None
            old = self.store.artifact_path(current).read_bytes()
            data = await asyncio.to_thread(apply_delta, old, patch, artifact.length)
            trust.check_artifact(data, artifact)  # checks 4.1, 4.2 on the patched result
        except (DownloadError, VerificationError, httpx.HTTPError, ValueError, OSError, RuntimeError,
                MemoryError):
            return None
        transfer.kind = "delta"
        return data

    def _finish(self, artifact: Artifact) -> bytes:
        part = self.store.partial_path(artifact.sha256)
        data = part.read_bytes()
        if len(data) < artifact.length:
            raise DownloadError(f"artifact {artifact.sha256[:12]}…: connection ended after "
                                f"{len(data)} of {artifact.length} bytes (will resume)")
        try:
            trust.check_artifact(data, artifact)  # checks 4.1, 4.2
        except VerificationError:
            part.unlink(missing_ok=True)  # a corrupt partial must not be resumed
            raise
        return data

    # ------------------------------------------------------------------ reports

    async def flush_reports(self) -> int:
        """Send queued events, oldest first, in batches (device_sim/reports.py)."""
        return await flush_reports(self.http, self.store, self.identity.device_id)

    # ------------------------------------------------------------------ polling

    async def run(self, *, interval: float, iterations: int | None = None, rng: random.Random | None = None,
                  max_backoff: float = 3600.0, on_result: Callable[[SyncResult], None] | None = None,
                  before: Callable[[], None] | None = None) -> None:
        """Poll: ``next_delay`` between syncs; ``before`` runs ahead of each (queue stats)."""
        rng = rng or random.Random()
        failures = 0
        done = 0
        while iterations is None or done < iterations:
            if before:
                before()
            result = await self.sync_once()
            done += 1
            if on_result:
                on_result(result)
            failures = 0 if result.status in ("ok", "not_modified", "stale") else failures + 1
            if iterations is not None and done >= iterations:
                return
            await asyncio.sleep(next_delay(interval, failures, rng, max_backoff))
