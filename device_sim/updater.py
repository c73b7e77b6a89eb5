"""Network and disk for the device: register, root walk, index poll, downloads, install.

Everything is checked by ``device_sim.trust`` before ``device_sim.store`` saves it; the
check numbers cited here are docs/device.md's. The core is async (``httpx.AsyncClient``)
so one process can run a fleet; ``device_sim.device.Device`` wraps it for a single device.

The client is injected, so tests hand it the real app in-process (``httpx.ASGITransport``),
a real server on loopback, a fault-injecting transport or an attacker's server.
"""

from __future__ import annotations

import asyncio
import bz2
import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import bsdiff4.core
import httpx
import numpy as np
import onnxruntime as ort
import zstandard

from device_sim import trust
from device_sim.store import Identity, Installed, Store
from packager.errors import ModelSyncError, VerificationError
from packager.manifest import (
    Artifact,
    ChannelIndex,
    GoldenVectors,
    IndexEntry,
    ModelManifest,
    Root,
    format_time,
    utcnow,
)

MAX_ROOT_BYTES = 1 << 20
MAX_INDEX_BYTES = 8 << 20
DISCARD_BYTES = 64 << 10  # an error or 304 body read to its end so the connection is reused
REPORT_BATCH = 500
# A zstd frame can expand a few bytes into 128 KiB: feed the decompressor small slices so
# the length cap (check 4.1) is applied before a bomb can fill memory.
ZSTD_SLICE = 256


class DownloadError(ModelSyncError):
    """The network failed us: a status the protocol does not allow, a cut, a timeout."""

    code = "download"


class SlowRetrievalError(DownloadError):
    """The sync's overall deadline passed (a server trickling bytes cannot hold the device)."""

    code = "slow_retrieval"


@dataclass(frozen=True)
class SyncConfig:
    connect_timeout: float = 10.0
    read_timeout: float = 20.0  # per read: a silent server
    deadline: float = 300.0  # per sync: a trickling server
    chunk_size: int = 64 * 1024


@dataclass
class ModelOutcome:
    model: str
    version: int
    outcome: str  # installed | failed | deferred
    reason: str | None = None
    detail: str = ""
    transfer: str | None = None  # delta | zstd | full | resumed
    wire_bytes: int = 0


@dataclass
class SyncResult:
    status: str = "ok"  # ok | not_modified | stale | error | offline
    root_version: int | None = None
    index_version: int | None = None
    outcomes: list[ModelOutcome] = field(default_factory=list)
    reports_sent: int = 0
    error: str | None = None
    error_code: str | None = None
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


def make_client(server: str, config: SyncConfig, transport: httpx.AsyncBaseTransport | None = None,
                ) -> httpx.AsyncClient:
    timeout = httpx.Timeout(config.read_timeout, connect=config.connect_timeout)
    # Redirects (presigned S3 URLs) are followed; httpx drops Authorization across origins.
    return httpx.AsyncClient(base_url=server, transport=transport, timeout=timeout,
                             follow_redirects=True, headers={"User-Agent": "modelsync-device"})


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        if isinstance(body, dict) and "detail" in body:
            return f": {body['detail']}"
    except (ValueError, httpx.ResponseNotRead):
        pass
    return ""


def runtime_version() -> str:
    return str(ort.__version__)


# --------------------------------------------------------------------------- registration


async def register(
    client: httpx.AsyncClient,
    state: Path,
    *,
    enroll_token: str,
    platform: str,
    root_envelope: dict[str, Any],
    device_id: str | None = None,
    channel: str = "stable",
    app_version: str = "0.1.0",
    ort_version: str | None = None,
) -> Store:
    """Enroll with the server and write the state directory (identity + shipped root)."""
    if platform not in trust.PLATFORM_TARGETS:
        raise ModelSyncError(f"platform must be one of {', '.join(trust.PLATFORM_TARGETS)}, not {platform!r}")
    trust.trusted_root(root_envelope)  # check 1.1, before anything is written
    device_id = device_id or f"dev-{uuid.uuid4().hex[:12]}"
    ort_version = ort_version or runtime_version()
    providers = list(ort.get_available_providers())
    body = {"device_id": device_id, "platform": platform, "app_version": app_version,
            "ort_version": ort_version, "providers": providers}
    try:
        resp = await client.post("/v1/devices/register", json=body,
                                 headers={"Authorization": f"Bearer {enroll_token}"})
    except httpx.HTTPError as exc:
        raise DownloadError(f"cannot reach {client.base_url}: {exc}") from None
    if resp.status_code != 201:
        raise DownloadError(f"registration refused: HTTP {resp.status_code}{_detail(resp)}")
    answer = resp.json()
    identity = Identity(
        device_id=answer.get("device_id", device_id), server=str(client.base_url).rstrip("/"),
        platform=platform, target=trust.PLATFORM_TARGETS[platform], fleet=answer["fleet"],
        channel=channel, token=answer["device_token"], app_version=app_version, ort_version=ort_version,
        providers=providers,
    )
    path = Path(state)
    if (path / "device.json").is_file():  # re-registering keeps installed models and reports
        store = Store.open(path)
        store.save_identity(identity)
        return store
    return Store.create(path, identity, root_envelope)


# --------------------------------------------------------------------------- the updater


GoldenRunner = Callable[[bytes, GoldenVectors], tuple[list[int], list[float]]]
Progress = Callable[[str, int, int], None]  # (what, bytes so far, bytes in all)


def run_golden(data: bytes, golden: GoldenVectors) -> tuple[list[int], list[float]]:
    """checks 4.3 (loads and runs on the CPU provider), then the outputs for check 4.4."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if data[4:8] == b"ORTM":  # ORT-format FlatBuffer identifier
        opts.add_session_config_entry("session.load_model_format", "ORT")
    try:
        sess = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        outs = [o.name for o in sess.get_outputs()]
        names = ["label", "score"] if {"label", "score"} <= set(outs) else outs[:2]
        if len(names) != 2:
            raise ValueError(f"expected outputs label and score, found {outs}")
        dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        x = np.asarray(golden.inputs, dtype=dtype)
        # An NPU-friendly artifact may fix the batch at 1: feed it row by row.
        rows = [x[i : i + 1] for i in range(len(x))] if inp.shape and inp.shape[0] == 1 else [x]
        labels: list[int] = []
        scores: list[float] = []
        for batch in rows:
            lab, sc = sess.run(names, {inp.name: batch})
            labels += [int(v) for v in np.asarray(lab).ravel()]
            scores += [float(v) for v in np.asarray(sc, dtype=np.float64).ravel()]
    except Exception as exc:  # onnxruntime raises untyped pybind errors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise trust.ArtifactLoadError(f"onnxruntime cannot load or run the artifact: {first[:200]}") from None
    return labels, scores


def _bunzip(data: bytes, cap: int, what: str) -> bytes:
    dec = bz2.BZ2Decompressor()
    out = dec.decompress(data, max_length=cap + 1)
    if len(out) > cap:
        raise ValueError(f"delta {what} block expands past {cap} bytes")
    if not dec.eof:
        raise ValueError(f"delta {what} block is truncated")
    return out


def apply_delta(old: bytes, patch: bytes, length: int) -> bytes:
    """A BSDIFF4 patch applied with every block's size capped (check 4.1): the declared
    output must be the manifest's length, and no bz2 block may expand past it."""
    if len(patch) < 32 or patch[:8] != b"BSDIFF40":
        raise ValueError("not a BSDIFF4 patch")
    len_ctrl, len_diff, len_dst = (bsdiff4.core.decode_int64(patch[i : i + 8]) for i in (8, 16, 24))
    if len_dst != length:
        raise trust.LengthMismatchError(f"delta would produce {len_dst} bytes, the manifest says {length}")
    if len_ctrl < 0 or len_diff < 0 or 32 + len_ctrl + len_diff > len(patch):
        raise ValueError("delta header is inconsistent")
    ctrl = _bunzip(patch[32 : 32 + len_ctrl], 24 * (length + 2), "control")
    diff = _bunzip(patch[32 + len_ctrl : 32 + len_ctrl + len_diff], length, "diff")
    extra = _bunzip(patch[32 + len_ctrl + len_diff :], length, "extra")
    if len(ctrl) % 24:
        raise ValueError("delta control block is malformed")
    return bytes(bsdiff4.core.patch(old, len_dst, ctrl, diff, extra))


@dataclass
class _Transfer:
    kind: str = "full"
    wire: int = 0


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
    ) -> None:
        self.store = store
        self.client = client
        self.config = config or SyncConfig()
        self.identity: Identity = store.identity
        self.runtime = runtime or self.identity.ort_version
        self.now = now
        self.golden_runner = golden_runner
        self.progress = progress

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.identity.token}"}

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
        result.status = "offline" if offline else "error"
        result.error = str(exc)
        result.error_code = trust.error_code(exc)

    async def _sync(self, result: SyncResult) -> None:
        root = await self.update_root()
        result.root_version = root.version
        index = await self.update_index(root, result)
        if index is None:
            return
        result.index_version = index.version
        installed = self.store.installed_versions()
        for entry in trust.wanted_entries(index, self.identity.device_id, installed,
                                          self.store.failed()):  # check 2.6
            outcome = await self.update_model(entry, root)
            result.outcomes.append(outcome)
            result.wire_bytes += outcome.wire_bytes

    # ------------------------------------------------------------------ 1. root

    async def update_root(self) -> Root:
        root = trust.trusted_root(self.store.root_envelope())  # check 1.1
        for step in range(1, trust.MAX_ROOT_STEPS + 2):
            resp = await self._get(f"/v1/root/{root.version + 1}.json", auth=False)
            if resp.status_code == 404:
                await self._discard(resp)
                break
            if resp.status_code != 200:
                await self._refuse(resp, f"root v{root.version + 1}")
            raw = trust.parse_json(await self._read(resp, MAX_ROOT_BYTES, "root"), "root")
            new = trust.next_root(root, raw, step)  # checks 1.2-1.4
            if new.roles.get("index") != root.roles.get("index"):
                # The index keys changed: an index signed by the old keys with an inflated
                # version must not lock the device out (TUF's fast-forward recovery).
                self.store.forget_index(self.identity.channel)
            self.store.save_root(raw)  # check 1.5
            root = new
        return trust.final_root(root, self.now())  # check 1.6

    # ------------------------------------------------------------------ 2. index

    async def update_index(self, root: Root, result: SyncResult) -> ChannelIndex | None:
        ident = self.identity
        saved = self.store.saved_index(ident.channel)
        trusted_version: int | None = None
        headers = dict(self._auth)
        if saved is not None:
            saved_env, etag = saved
            trusted_version = int(saved_env["signed"]["version"])
            if etag:
                headers["If-None-Match"] = etag
        resp = await self._get(f"/v1/channels/{ident.channel}/index", headers=headers)  # check 2.1
        if resp.status_code == 304 and saved is not None:
            await self._discard(resp)
            raw, etag, fresh = saved[0], saved[1], False
            result.status = "not_modified"
        elif resp.status_code == 200:
            raw = trust.parse_json(await self._read(resp, MAX_INDEX_BYTES, "channel index"), "channel index")
            etag, fresh = resp.headers.get("etag"), True
        else:
            await self._refuse(resp, "channel index")
        try:
            index = trust.check_index(raw, root, fleet=ident.fleet, channel=ident.channel,
                                      trusted_version=trusted_version, now=self.now())  # checks 2.1-2.5
        except trust.StaleIndexError as exc:
            result.status = "stale"
            result.error, result.error_code = str(exc), exc.code
            result.index_version = exc.index.version
            if self.store.stale_reported(ident.channel) != exc.index.version:
                self.store.enqueue("stale_index", reason="stale_index",
                                   data={"index_version": exc.index.version, "expires": exc.index.expires})
                self.store.mark_stale_reported(ident.channel, exc.index.version)
            return None
        if fresh and (trusted_version is None or index.version > trusted_version):
            self.store.save_index(ident.channel, raw, etag)
        return index

    # ------------------------------------------------------------------ 3-5. one model

    async def update_model(self, entry: IndexEntry, root: Root) -> ModelOutcome:
        out = ModelOutcome(entry.model, entry.version, "failed")
        transfer = _Transfer()
        try:
            manifest_bytes, manifest, artifact = await self._fetch_manifest(entry, root, transfer)
            deferred = self._deferred(entry, artifact)
            if deferred:
                out.outcome, out.reason = "deferred", deferred
                return out
            data = await self._fetch_artifact(artifact, entry.model, transfer)
            labels, scores = await asyncio.to_thread(self.golden_runner, data, manifest.golden)  # 4.3
            trust.check_golden(labels, scores, manifest.golden, artifact.golden_tolerance)  # check 4.4
            inst = Installed(
                name=manifest.name, version=manifest.version, target=artifact.target,
                manifest_sha256=entry.manifest.sha256, artifact_sha256=artifact.sha256,
                artifact_length=artifact.length, installed_at=format_time(self.now()),
            )
            self.store.install(inst, manifest_bytes, data)  # checks 5.1-5.3
            self.store.enqueue("installed", model=inst.name, version=inst.version,  # check 5.4
                               data={"target": artifact.target, "transfer": transfer.kind,
                                     "wire_bytes": transfer.wire})
            out.outcome = "installed"
        except VerificationError as exc:
            out.reason, out.detail = trust.error_code(exc), str(exc)
            kind = "golden_failed" if isinstance(exc, trust.GoldenVectorError) else "install_failed"
            self.store.enqueue(kind, model=entry.model, version=entry.version, reason=out.reason,
                               data={"detail": str(exc)[:500]})
            if isinstance(exc, trust.PERMANENT):
                self.store.mark_failed(entry.model, entry.version)
        except DownloadError as exc:  # transient: the next poll retries (resuming)
            out.reason, out.detail = exc.code, str(exc)
        finally:
            out.transfer, out.wire_bytes = transfer.kind, transfer.wire
        return out

    def _deferred(self, entry: IndexEntry, artifact: Artifact) -> str | None:
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
        self, entry: IndexEntry, root: Root, transfer: _Transfer
    ) -> tuple[bytes, ModelManifest, Artifact]:
        resp = await self._get(f"/v1/{entry.manifest.path}")
        if resp.status_code != 200:
            await self._refuse(resp, f"manifest {entry.model} v{entry.version}")
        # check 3.1: one byte past the entry's length is enough to know it is not that manifest
        data = await self._read(resp, entry.manifest.length + 1, "manifest", strict=False)
        transfer.wire += len(data)
        slot = self.store.slot(entry.model)
        manifest = trust.check_manifest(data, root, entry,
                                        slot.current.version if slot else None)  # checks 3.1-3.5
        artifact = trust.select_artifact(manifest, self.identity.target, self.runtime)  # 3.6, 3.7
        return data, manifest, artifact

    # ------------------------------------------------------------------ 4. artifact bytes

    async def _fetch_artifact(self, artifact: Artifact, model: str, transfer: _Transfer) -> bytes:
        delta = await self._try_delta(artifact, model, transfer)
        if delta is not None:
            return delta
        for _attempt in range(2):  # a second go only after the server refused our Range
            data = await self._download(artifact, transfer)
            if data is not None:
                return data
        raise DownloadError(f"artifact {artifact.sha256[:12]}…: server refuses the resumed range")

    async def _try_delta(self, artifact: Artifact, model: str, transfer: _Transfer) -> bytes | None:
        """A bsdiff4 patch from the installed artifact; any problem means a full download."""
        current = self.store.usable(model)
        if current is None or current.target != artifact.target or current.artifact_sha256 == artifact.sha256:
            return None
        if self.store.partial_path(artifact.sha256).exists():
            return None  # a resumable full download is already under way
        try:
            resp = await self._get(f"/v1/blobs/{artifact.sha256}/delta",
                                   params={"from": current.artifact_sha256},
                                   headers={**self._auth, "Accept-Encoding": "identity"})
            if resp.status_code != 200 or resp.headers.get("x-delta-from") != current.artifact_sha256:
                await self._discard(resp)
                return None
            # A patch larger than the artifact is no delta worth taking (check 4.1 cap).
            patch = await self._read(resp, artifact.length + 1, "delta", strict=False)
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

    async def _download(self, artifact: Artifact, transfer: _Transfer) -> bytes | None:
        """Full, zstd or Range-resumed download into cache/<sha>.part, length-capped all the
        way (check 4.1), hash-checked at the end (check 4.2). None: start again from 0."""
        part = self.store.partial_path(artifact.sha256)
        offset = part.stat().st_size if part.exists() else 0
        if offset >= artifact.length:
            return self._finish(part, artifact)
        headers = dict(self._auth)
        if offset:
            headers |= {"Range": f"bytes={offset}-", "Accept-Encoding": "identity"}
        else:
            headers["Accept-Encoding"] = "zstd"
        url = f"/v1/blobs/{artifact.sha256}"
        try:
            async with self.client.stream("GET", url, headers=headers) as resp:
                if resp.status_code == 416 or (offset and resp.status_code == 200):
                    part.unlink(missing_ok=True)  # the server will not resume: start over
                    if resp.status_code == 416:
                        return None
                    offset = 0
                elif offset and resp.status_code == 206:
                    got = resp.headers.get("content-range", "")
                    if got.removeprefix("bytes ").split("-")[0] != str(offset):
                        raise DownloadError(f"asked for bytes {offset}-, got Content-Range {got!r}")
                    transfer.kind = "resumed"
                elif resp.status_code != 200:
                    raise DownloadError(f"artifact {artifact.sha256[:12]}…: HTTP {resp.status_code}")
                encoding = resp.headers.get("content-encoding", "identity").lower()
                if encoding not in ("identity", "zstd"):
                    raise DownloadError(f"artifact sent with unasked-for Content-Encoding {encoding}")
                if encoding == "zstd":
                    transfer.kind = "zstd"
                await self._stream_to(part, resp, offset, artifact, zstd=encoding == "zstd",
                                      transfer=transfer)
        except httpx.HTTPError as exc:
            raise DownloadError(f"artifact {artifact.sha256[:12]}…: {type(exc).__name__}: {exc}") from None
        return self._finish(part, artifact)

    async def _stream_to(self, part: Path, resp: httpx.Response, offset: int, artifact: Artifact, *,
                         zstd: bool, transfer: _Transfer) -> None:
        declared = artifact.length
        # Compressed bytes are capped too: endless empty zstd frames produce no output.
        wire_cap = declared + declared // 16 + 4096
        dec = zstandard.ZstdDecompressor().decompressobj() if zstd else None
        size = offset
        wire = 0
        with open(part, "r+b" if offset else "wb") as fh:
            fh.seek(offset)
            async for chunk in resp.aiter_raw(self.config.chunk_size):
                wire += len(chunk)
                transfer.wire += len(chunk)
                if dec is None:
                    pieces = [chunk]
                else:
                    if wire > wire_cap:
                        part.unlink(missing_ok=True)
                        raise trust.LengthMismatchError("compressed artifact is longer than any encoding "
                                                        f"of {declared} bytes")
                    try:
                        pieces = [dec.decompress(chunk[i : i + ZSTD_SLICE])
                                  for i in range(0, len(chunk), ZSTD_SLICE)]
                    except zstandard.ZstdError as exc:
                        raise DownloadError(f"corrupt zstd stream: {exc}") from None
                for piece in pieces:
                    size += len(piece)
                    if size > declared:  # check 4.1: endless data stops here
                        fh.close()
                        part.unlink(missing_ok=True)
                        trust.check_length_so_far(size, declared)
                    fh.write(piece)
                fh.flush()
                if self.progress is not None:
                    self.progress(f"artifact {artifact.sha256[:12]}", size, declared)

    def _finish(self, part: Path, artifact: Artifact) -> bytes:
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
        """Send queued events, oldest first, in batches; each batch leaves the queue on 200."""
        sent = 0
        while True:
            batch = list(self.store.queued(REPORT_BATCH))
            if not batch:
                return sent
            body = {"events": [event for _, event in batch]}
            try:
                resp = await self.client.post(f"/v1/devices/{self.identity.device_id}/reports",
                                              json=body, headers=self._auth)
            except httpx.HTTPError as exc:
                raise DownloadError(f"reports: {type(exc).__name__}") from None
            if resp.status_code != 200:
                raise DownloadError(f"reports: HTTP {resp.status_code}{_detail(resp)}")
            self.store.dequeue([p for p, _ in batch])
            sent += len(batch)

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

    # ------------------------------------------------------------------ HTTP helpers

    async def _get(self, url: str, *, auth: bool = True, headers: dict[str, str] | None = None,
                   params: dict[str, str] | None = None) -> httpx.Response:
        req = self.client.build_request("GET", url, headers=headers if headers is not None
                                        else (self._auth if auth else {}), params=params)
        try:
            try:
                return await self.client.send(req, stream=True)
            except httpx.RemoteProtocolError:
                # A pooled keep-alive connection the server closed just as we reused it
                # ("Server disconnected without sending a response"): a GET is idempotent, so
                # one retry on a fresh connection, as browsers do, rather than a failed sync.
                return await self.client.send(req, stream=True)
        except httpx.HTTPError as exc:
            raise DownloadError(f"GET {url}: {type(exc).__name__}: {exc}") from None

    async def _refuse(self, resp: httpx.Response, what: str) -> NoReturn:
        """Raise DownloadError for an unexpected status, with the server's one-line detail."""
        body = await self._read(resp, 4096, what, strict=False)
        try:
            detail = json.loads(body).get("detail")
        except (ValueError, AttributeError):
            detail = None
        raise DownloadError(f"{what}: HTTP {resp.status_code}" + (f": {detail}" if detail else ""))

    async def _discard(self, resp: httpx.Response) -> None:
        """Read a small answer to its end before closing: closing an unread streamed response
        drops its keep-alive connection, so every 304 poll would open a new one."""
        await self._read(resp, DISCARD_BYTES, "response", strict=False)

    async def _read(self, resp: httpx.Response, cap: int, what: str, strict: bool = True) -> bytes:
        """The body, at most ``cap`` bytes (``strict``: more is an error; else truncated at cap)."""
        buf = bytearray()
        try:
            async for chunk in resp.aiter_bytes(self.config.chunk_size):
                buf += chunk
                if len(buf) > cap:
                    if strict:
                        raise trust.LengthMismatchError(f"{what} is longer than {cap} bytes")
                    del buf[cap:]
                    break
        except httpx.HTTPError as exc:
            raise DownloadError(f"{what}: {type(exc).__name__}: {exc}") from None
        finally:
            await resp.aclose()
        return bytes(buf)
