"""Thousands of simulated devices in one asyncio process, against a real sync service.

Each simulated device is the real device code: ``device_sim.device.register`` writes its
state directory and ``Updater.sync_once`` runs every numbered check of docs/device.md and
saves through ``device_sim.store``. What the fleet adds is the world around them:

* a mix of platforms (android / ios / linux → the three artifact targets), onnxruntime
  versions (a few older than the artifacts: they must refuse, check 3.7) and networks
  (wifi; metered cellular that defers large downloads until it reaches wifi, C.1; lossy
  links through ``device_sim.faults.FaultyTransport``), and offline windows;
* jittered polls with the updater's own backoff (``next_delay``);
* scale tricks that change nothing a device checks: one shared connection pool, and one
  onnxruntime session per artifact sha256 for the golden-vector check (a phone holds one
  session for its one model; a thousand simulated phones need not hold a thousand);
* an observer that reads the channel index as a device sees it (for the report: when a
  release changed, what percent, which salt), and a sampler that records who runs what.

Nothing here decides what a device may install: the devices do, from signed data.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import shutil
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client import CollectorRegistry

from device_sim.device import register
from device_sim.engine import OnnxEngine
from device_sim.faults import FaultPlan, FaultyTransport
from device_sim.fleet_report import BucketCheck, FleetResult
from device_sim.store import Store
from device_sim.transfer import SyncConfig
from device_sim.updater import SyncResult, Updater, next_delay
from packager.errors import ModelSyncError, UsageError
from packager.manifest import GoldenVectors, rollout_bucket

PLATFORMS = {"android": 0.45, "ios": 0.35, "linux": 0.20}
OLD_RUNTIME = "1.22.0"  # older than any artifact this onnxruntime 1.24 writes
POOL_SIZE = 16
KEEPALIVE_S = 3.0


@dataclass(frozen=True)
class NetProfile:
    name: str
    plan: FaultPlan
    metered: bool = False


PROFILES: dict[str, NetProfile] = {
    "wifi": NetProfile("wifi", FaultPlan(latency=0.005)),
    "cellular": NetProfile("cellular", FaultPlan(latency=0.06, bandwidth=400_000), metered=True),
    # Cuts and 5xx bursts only: a flipped bit in a signed document is reported by the
    # device as an install failure, which is not what a lossy link should look like to
    # the health gate (faults.py's flip is exercised by the device's own fault tests).
    "lossy": NetProfile("lossy", FaultPlan(cut=0.15, error=0.05, burst=2, latency=0.12, bandwidth=150_000)),
}
NETWORK_MIX = {"wifi": 0.7, "cellular": 0.2, "lossy": 0.1}


@dataclass(frozen=True)
class FleetSpec:
    devices: int
    server: str
    enroll_token: str
    root_envelope: dict[str, Any]
    channel: str = "stable"
    poll_interval_s: float = 5.0
    seed: int = 0
    platforms: dict[str, float] = field(default_factory=lambda: dict(PLATFORMS))
    networks: dict[str, float] = field(default_factory=lambda: dict(NETWORK_MIX))
    old_runtime_share: float = 0.02
    offline_share: float = 0.05
    offline_window_s: tuple[float, float] = (2.0, 4.0)  # in poll intervals: (min, max) length
    offline_start_within_s: float = 30.0
    # Metered devices defer artifacts above this (C.1) until they reach wifi.
    metered_max_bytes: int = 4096
    wifi_within_polls: float = 2.0
    enroll_over_s: float | None = None  # default: one poll interval
    max_connections: int = 128  # per network profile
    sample_every_s: float = 0.5
    state_dir: Path | None = None  # kept after the run; default: a temporary directory
    state_root: Path | None = None  # where that temporary directory goes
    device_prefix: str = "sim"

    def __post_init__(self) -> None:
        if self.devices < 1:
            raise UsageError(f"--devices must be >= 1, got {self.devices}")
        if self.poll_interval_s <= 0:
            raise UsageError("--poll-interval must be > 0")
        for name in self.networks:
            if name not in PROFILES:
                raise UsageError(f"unknown network profile {name!r}: choose from {', '.join(PROFILES)}")


@dataclass
class SimDevice:
    index: int
    device_id: str
    platform: str
    ort_version: str
    network: str
    start_delay: float
    offline: tuple[float, float] | None
    wifi_at: float | None
    rng: random.Random
    faults: FaultyTransport | None = None
    client: httpx.AsyncClient | None = None
    updater: Updater | None = None
    installed: dict[str, int] = field(default_factory=dict)
    registered: bool = False
    metered_now: bool = False

    @property
    def old_runtime(self) -> bool:
        return self.ort_version == OLD_RUNTIME

    def offline_at(self, t: float) -> bool:
        return self.offline is not None and self.offline[0] <= t < self.offline[1]


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    names = list(weights)
    return rng.choices(names, weights=[weights[n] for n in names])[0]


def plan_devices(spec: FleetSpec) -> list[SimDevice]:
    """Deterministic per seed: the same mix, windows and jitter on every run."""
    rng = random.Random(spec.seed)
    enroll = spec.enroll_over_s if spec.enroll_over_s is not None else spec.poll_interval_s
    devices = []
    for i in range(spec.devices):
        network = _pick(rng, spec.networks)
        offline = None
        if rng.random() < spec.offline_share:
            start = rng.uniform(0, spec.offline_start_within_s)
            lo, hi = spec.offline_window_s
            offline = (start, start + rng.uniform(lo, hi) * spec.poll_interval_s)
        devices.append(
            SimDevice(
                index=i,
                device_id=f"{spec.device_prefix}-{spec.seed}-{i:05d}",
                platform=_pick(rng, spec.platforms),
                ort_version=OLD_RUNTIME if rng.random() < spec.old_runtime_share else "",
                network=network,
                start_delay=rng.uniform(0, enroll),
                offline=offline,
                wifi_at=(
                    rng.uniform(0, spec.wifi_within_polls) * spec.poll_interval_s
                    if PROFILES[network].metered
                    else None
                ),
                rng=random.Random(rng.getrandbits(64)),
            )
        )
    return devices


class SessionCache:
    """One InferenceSession per artifact sha256, shared by every simulated device in a
    process: a real phone holds one session for its one model; a thousand simulated phones
    with the same artifact need not hold a thousand copies."""

    def __init__(self) -> None:
        self._engines: dict[str, OnnxEngine] = {}
        self._lock = threading.Lock()

    def get(
        self, sha256: str, load: Callable[[], bytes], registry: CollectorRegistry | None = None
    ) -> OnnxEngine:
        with self._lock:
            hit = self._engines.get(sha256)
        if hit is not None:
            return hit
        engine = OnnxEngine(load(), registry=registry)
        with self._lock:
            return self._engines.setdefault(sha256, engine)

    def __len__(self) -> int:
        return len(self._engines)


class SharedGolden:
    """The updater's golden runner (checks 4.3, 4.4 inputs), with one session per artifact."""

    def __init__(self) -> None:
        self.cache = SessionCache()
        self.runs = 0

    def __call__(self, data: bytes, golden: GoldenVectors) -> tuple[list[int], list[float]]:
        from device_sim import trust
        from device_sim.engine import EngineError

        sha = hashlib.sha256(data).hexdigest()
        try:
            engine = self.cache.get(sha, lambda: data)
            pred = engine.predict(np.asarray(golden.inputs, dtype=np.float32))
        except EngineError as exc:
            raise trust.ArtifactLoadError(str(exc)) from None
        self.runs += 1
        return [int(v) for v in pred.labels], [float(v) for v in pred.scores]


class _OfflineSwitch(httpx.AsyncBaseTransport):
    """The radio: while the device is in an offline window nothing leaves it."""

    def __init__(
        self, inner: httpx.AsyncBaseTransport, device: SimDevice, clock: Callable[[], float]
    ) -> None:
        self.inner, self.device, self.clock = inner, device, clock

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.device.offline_at(self.clock()):
            raise httpx.ConnectError("offline (simulated window)", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:  # the shared pool is closed by the fleet, not per device
        return None


@dataclass
class _IndexEntryView:
    model: str
    version: int
    percent: float
    salt: str


class Fleet:
    def __init__(
        self, spec: FleetSpec, *, on_sample: Callable[[float, dict[str, int]], None] | None = None
    ) -> None:
        self.spec = spec
        self.devices = plan_devices(spec)
        self.golden = SharedGolden()
        self.on_sample = on_sample
        self.result = FleetResult(
            devices=spec.devices,
            duration_s=0.0,
            poll_interval_s=spec.poll_interval_s,
            mix={
                "platform": dict(Counter(d.platform for d in self.devices)),
                "network": dict(Counter(d.network for d in self.devices)),
                "onnxruntime": dict(Counter(d.ort_version or "current" for d in self.devices)),
                "offline window": {
                    "yes": sum(d.offline is not None for d in self.devices),
                    "no": sum(d.offline is None for d in self.devices),
                },
            },
        )
        self._owned_state: tempfile.TemporaryDirectory[str] | None = None
        self.state_dir = spec.state_dir or Path(self._own_state())
        self._t0 = 0.0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._pools: dict[tuple[str, int], httpx.AsyncHTTPTransport] = {}
        self._n_pools = 1
        self._sync_ms: list[float] = []
        self._sync_ms_by_network: dict[str, list[float]] = defaultdict(list)
        self._failed: dict[str, set[tuple[str, str, int]]] = defaultdict(set)
        self._injected: Counter[str] = Counter()
        self._unexpected: Counter[str] = Counter()
        self._unexpected_examples: dict[str, str] = {}
        self._bytes: Counter[str] = Counter()
        self._requests: Counter[str] = Counter()
        # index observer: version -> entries, and when each (model, version, percent) was seen
        self.index_versions: list[tuple[float, int, list[_IndexEntryView]]] = []
        self._phase_last: dict[tuple[str, int, float], tuple[float, dict[str, int]]] = {}
        self._golden_failed_by_version: dict[tuple[str, int], Counter[str]] = defaultdict(Counter)
        self._install_index: dict[tuple[str, str, int], int | None] = {}
        self._install_at: dict[tuple[str, str, int], float] = {}

    def _own_state(self) -> str:
        root = str(self.spec.state_root) if self.spec.state_root else None
        self._owned_state = tempfile.TemporaryDirectory(prefix="modelsync-fleet-", dir=root)
        return self._owned_state.name

    def now(self) -> float:
        return time.monotonic() - self._t0

    # ------------------------------------------------------------------ running

    async def start(self) -> None:
        self._t0 = time.monotonic()
        # Several small pools rather than one big one: httpcore scans its whole pool for
        # every queued request, which at a few hundred connections costs more than the sync.
        n_pools = max(1, -(-self.spec.max_connections // POOL_SIZE))
        per_pool = max(1, self.spec.max_connections // n_pools)
        # Expire idle connections before uvicorn's 5 s keep-alive does, or a poll may reuse
        # a connection the server is closing at that moment (a spurious ReadError).
        limits = httpx.Limits(
            max_connections=per_pool, max_keepalive_connections=per_pool, keepalive_expiry=KEEPALIVE_S
        )
        # Pools per network profile too: a bandwidth-capped download holds its connection
        # for seconds, and wifi devices must not queue behind lossy ones in the simulator.
        self._pools = {
            (network, i): httpx.AsyncHTTPTransport(limits=limits, retries=0)
            for network in PROFILES
            for i in range(n_pools)
        }
        self._n_pools = n_pools
        self._tasks = [asyncio.create_task(self._life(d)) for d in self.devices]
        self._tasks.append(asyncio.create_task(self._sampler()))
        self._tasks.append(asyncio.create_task(self._observer()))

    async def run_for(self, seconds: float) -> FleetResult:
        await self.start()
        try:
            await self.wait(lambda: False, seconds)
        finally:
            await self.stop()
        return self.result

    async def wait(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return True
            await asyncio.sleep(min(self.spec.sample_every_s, max(0.0, deadline - time.monotonic())))
        return done()

    async def stop(self) -> FleetResult:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for pool in self._pools.values():
            await pool.aclose()
        self._pools = {}
        self._sample()
        self._finish()
        if self._owned_state is not None:
            self._owned_state.cleanup()
            self._owned_state = None
        return self.result

    def _client(self, device: SimDevice) -> httpx.AsyncClient:
        """Per device: its own faults and radio over the one shared connection pool."""
        pool = self._pools[(device.network, device.index % self._n_pools)]
        profile = PROFILES[device.network]
        device.faults = FaultyTransport(pool, profile.plan, rng=random.Random(device.rng.getrandbits(64)))
        transport = _OfflineSwitch(device.faults, device, self.now)
        cfg = SyncConfig()
        # pool: waiting for a free connection of the shared pool is the simulator's queue,
        # not the device's network; it gets its own generous limit.
        timeout = httpx.Timeout(cfg.read_timeout, connect=cfg.connect_timeout, pool=120.0)
        device.client = httpx.AsyncClient(
            base_url=self.spec.server,
            transport=transport,
            timeout=timeout,
            headers={"User-Agent": "modelsync-fleet"},
        )
        return device.client

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=max(0.0, seconds))

    async def _life(self, device: SimDevice) -> None:
        client = self._client(device)
        try:
            await self._live(device, client)
        finally:
            await client.aclose()

    async def _live(self, device: SimDevice, client: httpx.AsyncClient) -> None:
        await self._sleep(device.start_delay)
        failures = 0
        while not self._stop.is_set():
            if not device.registered:
                ok = await self._register(device, client)
                if not ok:
                    failures += 1
                    await self._sleep(
                        next_delay(
                            self.spec.poll_interval_s, failures, device.rng, 4 * self.spec.poll_interval_s
                        )
                    )
                    continue
            try:
                ok = await self._sync(device)
            except Exception as exc:  # a bug in device code must show in the report, not end the device
                self._unexpected[f"crash ({type(exc).__name__})"] += 1
                self._unexpected_examples.setdefault(f"crash ({type(exc).__name__})", str(exc)[:300])
                ok = False
            failures = 0 if ok else failures + 1
            await self._sleep(
                next_delay(self.spec.poll_interval_s, failures, device.rng, 4 * self.spec.poll_interval_s)
            )

    async def _register(self, device: SimDevice, client: httpx.AsyncClient) -> bool:
        before = self._fault_count(device)
        try:
            store = await register(
                client,
                self.state_dir / device.device_id,
                enroll_token=self.spec.enroll_token,
                platform=device.platform,
                root_envelope=self.spec.root_envelope,
                device_id=device.device_id,
                channel=self.spec.channel,
                ort_version=device.ort_version or None,
            )
        except ModelSyncError as exc:
            self._classify_failure(device, before, "register", str(exc))
            return False
        device.registered = True
        device.metered_now = PROFILES[device.network].metered
        self._apply_network(device, store)
        return True

    def _apply_network(self, device: SimDevice, store: Store) -> None:
        ident = store.identity
        if ident.metered != device.metered_now:
            store.save_identity(
                ident.model_copy(
                    update={"metered": device.metered_now, "metered_max_bytes": self.spec.metered_max_bytes}
                )
            )
        assert device.client is not None
        device.updater = Updater(store, device.client, golden_runner=self.golden)

    async def _sync(self, device: SimDevice) -> bool:
        assert device.updater is not None
        if device.metered_now and device.wifi_at is not None and self.now() >= device.wifi_at:
            device.metered_now = False  # reached wifi: C.1 no longer holds it back
            self._apply_network(device, device.updater.store)
        before = self._fault_count(device)
        started = time.perf_counter()
        result = await device.updater.sync_once()
        elapsed_ms = 1000 * (time.perf_counter() - started)
        self._sync_ms.append(elapsed_ms)
        self._sync_ms_by_network[device.network].append(elapsed_ms)
        self._account(device, result, before)
        return result.ok or result.status == "stale"

    # ------------------------------------------------------------------ accounting

    @staticmethod
    def _fault_count(device: SimDevice) -> int:
        log = device.faults.log if device.faults is not None else None
        return (log.cuts + log.flips + log.errors + log.hangs) if log else 0

    def _classify_failure(self, device: SimDevice, before: int, code: str, detail: str) -> None:
        if device.offline_at(self.now()) or "simulated window" in detail:
            self._injected["offline (window)"] += 1
        elif self._fault_count(device) != before or (
            code == "slow_retrieval" and PROFILES[device.network].plan.bandwidth is not None
        ):
            self._injected[f"{device.network} link fault ({code})"] += 1
        else:
            self._unexpected[code] += 1
            self._unexpected_examples.setdefault(code, detail[:300])

    def _account(self, device: SimDevice, result: SyncResult, before: int) -> None:
        self._requests[f"index {result.status}"] += 1
        if result.status in ("error", "offline"):
            self._classify_failure(device, before, result.error_code or "error", result.error or "")
        for o in result.outcomes:
            if o.outcome == "installed":
                device.installed[o.model] = o.version
                self._bytes[o.transfer or "full"] += o.wire_bytes
                self._requests[o.transfer or "full"] += 1
                self._install_index[(device.device_id, o.model, o.version)] = result.index_version
                self._install_at[(device.device_id, o.model, o.version)] = self.now()
            elif o.outcome == "deferred":
                self._injected[f"deferred ({o.reason})"] += 1
            elif (
                o.reason in ("runtime_too_old", "golden_vector", "no_artifact_for_target", "artifact_load")
                or o.reason is None
            ):
                self._failed[o.reason or "unknown"].add((device.device_id, o.model, o.version))
                if o.reason == "golden_vector":
                    self._golden_failed_by_version[(o.model, o.version)][device.platform] += 1
            else:  # a download that failed part way: transient unless nothing was injected
                self._classify_failure(device, before, o.reason, o.detail)

    def snapshot(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for d in self.devices:
            if not d.installed:
                counts["none"] += 1
            for model, version in d.installed.items():
                counts[f"{model} v{version}"] += 1
        return dict(counts)

    def _sample(self) -> None:
        t = self.now()
        snap = self.snapshot()
        self.result.timeline.append((t, snap))
        if self.index_versions:
            for e in self.index_versions[-1][2]:
                self._phase_last[(e.model, e.version, e.percent)] = (t, snap)
        if self.on_sample:
            self.on_sample(t, snap)

    async def _sampler(self) -> None:
        while not self._stop.is_set():
            self._sample()
            await self._sleep(self.spec.sample_every_s)

    async def _observer(self) -> None:
        """Reads the index with the first registered device's token, as that device would."""
        etag: str | None = None
        async with httpx.AsyncClient(base_url=self.spec.server, timeout=10.0) as client:
            while not self._stop.is_set():
                token = next((d.updater.identity.token for d in self.devices if d.updater), None)
                if token is not None:
                    headers = {"Authorization": f"Bearer {token}"}
                    if etag:
                        headers["If-None-Match"] = etag
                    try:
                        resp = await client.get(f"/v1/channels/{self.spec.channel}/index", headers=headers)
                        if resp.status_code == 200:
                            etag = resp.headers.get("etag")
                            self._observe(resp.json())
                    except (httpx.HTTPError, ValueError, KeyError):
                        pass
                await self._sleep(self.spec.sample_every_s)

    def _observe(self, envelope: dict[str, Any]) -> None:
        signed = envelope["signed"]
        entries = [
            _IndexEntryView(model, int(e["version"]), float(e["rollout"]["percent"]), e["rollout"]["salt"])
            for model, es in signed["models"].items()
            for e in es
        ]
        self.index_versions.append((self.now(), int(signed["version"]), entries))

    # ------------------------------------------------------------------ the report

    def eligible(self) -> list[SimDevice]:
        return [d for d in self.devices if not d.old_runtime]

    def share_on(self, model: str, version: int) -> float:
        pool = self.eligible()
        return sum(d.installed.get(model) == version for d in pool) / max(len(pool), 1)

    def expected_share(self, model: str, version: int, percent: float, salt: str) -> float:
        pool = self.eligible()
        return sum(rollout_bucket(salt, d.device_id) < percent * 100 for d in pool) / max(len(pool), 1)

    def _finish(self) -> None:
        r = self.result
        r.duration_s = self.now()
        r.syncs = len(self._sync_ms)
        if self._sync_ms:
            r.sync_p50_ms, r.sync_p95_ms = (float(v) for v in np.percentile(self._sync_ms, [50, 95]))
        r.bytes_by_kind = dict(self._bytes)
        r.requests_by_kind = dict(self._requests)
        # devices, not events: a device refusing v1 and v2 is one device with that reason
        r.failures_by_reason = {k: len({dev for dev, _, _ in v}) for k, v in self._failed.items()}
        old = sum(d.old_runtime for d in self.devices)
        refused = len({dev for dev, _, _ in self._failed.get("runtime_too_old", set())})
        for network, times in sorted(self._sync_ms_by_network.items()):
            p50, p95 = (float(v) for v in np.percentile(times, [50, 95]))
            r.notes.append(f"{network}: {len(times):,} syncs, p50 {p50:.0f} ms, p95 {p95:.0f} ms")
        self._injected["old onnxruntime devices (must refuse, check 3.7)"] = old
        r.injected = dict(self._injected)
        r.unexpected_errors = dict(self._unexpected)
        if self._unexpected_examples:
            r.notes += [f"example {k}: {v}" for k, v in self._unexpected_examples.items()]
        r.notes.append(
            f"{refused} of {old} devices with onnxruntime {OLD_RUNTIME} refused an artifact "
            "written by a newer runtime (the rest never had one offered)"
        )
        r.notes.append(
            f"golden-vector checks run: {self.golden.runs:,} on {len(self.golden.cache)} "
            "shared onnxruntime session(s)"
        )
        self._buckets()
        self._convergence()
        self._health_gate()

    def _buckets(self) -> None:
        seen: dict[tuple[str, int, float], _IndexEntryView] = {}
        for _, _, entries in self.index_versions:
            for e in entries:
                seen[(e.model, e.version, e.percent)] = e
        pool = self.eligible()
        for key, e in seen.items():
            if e.percent >= 100 or e.percent <= 0 or key not in self._phase_last:
                continue
            _, snap = self._phase_last[key]
            in_bucket = {d.device_id for d in pool if rollout_bucket(e.salt, d.device_id) < e.percent * 100}
            # state at the end of this phase, from the sample taken then
            label = f"{e.model} v{e.version}"
            installed = [d for d in pool if d.installed.get(e.model, 0) >= e.version]
            self.result.buckets.append(
                BucketCheck(
                    model=e.model,
                    version=e.version,
                    percent=e.percent,
                    devices=len(pool),
                    expected_share=len(in_bucket) / max(len(pool), 1),
                    observed_share=snap.get(label, 0) / max(len(pool), 1),
                    in_bucket=len(in_bucket),
                    installed_in_bucket=sum(d.device_id in in_bucket for d in installed),
                    installed_outside=self._outside_installs(e, in_bucket),
                )
            )

    def _outside_installs(self, e: _IndexEntryView, in_bucket: set[str]) -> int:
        """Devices outside the bucket that installed the version from an index listing it at
        this percent (judged by the index version each device actually acted on)."""
        listed = {
            version
            for _, version, es in self.index_versions
            if any((x.model, x.version, x.percent) == (e.model, e.version, e.percent) for x in es)
        }
        return sum(
            1
            for (device_id, model, version), index_version in self._install_index.items()
            if (model, version) == (e.model, e.version)
            and device_id not in in_bucket
            and index_version in listed
        )

    def _convergence(self) -> None:
        full = [(t, e) for t, _, es in self.index_versions for e in es if e.percent >= 100]
        if not full:
            self.result.converged["release at 100%"] = "none observed"
            return
        _, e = full[-1]
        first = next(t for t, x in full if (x.model, x.version) == (e.model, e.version))
        pool = self.eligible()
        label = f"{e.model} v{e.version}"
        reached: dict[str, float | None] = {"95%": None, "99%": None, "100%": None}
        for t, snap in self.result.timeline:
            if t < first:
                continue
            share = snap.get(label, 0) / max(len(pool), 1)
            for k, need in (("95%", 0.95), ("99%", 0.99), ("100%", 1.0)):
                if reached[k] is None and share >= need - 1e-9:
                    reached[k] = t - first
        c = self.result.converged
        c["release"] = label
        c["eligible devices (current onnxruntime)"] = len(pool)
        c["on it at the end"] = f"{self.share_on(e.model, e.version):.2%}"
        for k, v in reached.items():
            c[f"time to {k} of eligible"] = self._in_polls(v)
        for network in sorted({d.network for d in pool}):
            group = [d for d in pool if d.network == network]
            times = [self._install_at.get((d.device_id, e.model, e.version)) for d in group]
            done = [t - first for t in times if t is not None]
            c[f"{network}: last device on it"] = (
                self._in_polls(max(done))
                if len(done) == len(group)
                else f"{len(done)} of {len(group)} by the end"
            )

    def _in_polls(self, seconds: float | None) -> str:
        if seconds is None:
            return "not reached"
        return f"{seconds:.1f} s ({seconds / self.spec.poll_interval_s:.1f} poll intervals)"

    def _health_gate(self) -> None:
        listed: dict[tuple[str, int], tuple[float, float | None]] = {}
        for t, _, entries in self.index_versions:
            keys = {(e.model, e.version) for e in entries}
            for k in keys:
                if k not in listed:
                    listed[k] = (t, None)
            for k, (first, gone) in list(listed.items()):
                if k not in keys and gone is None:
                    listed[k] = (first, t)
        for (model, version), by_platform in self._golden_failed_by_version.items():
            seen = listed.get((model, version))
            listed_at: float | None = seen[0] if seen else None
            withdrawn: float | None = seen[1] if seen else None
            self.result.health_gate[f"{model} v{version}"] = {
                "golden_failed devices by platform": dict(by_platform),
                "installed elsewhere": sum(d.installed.get(model) == version for d in self.devices),
                "first in index at": None if listed_at is None else round(listed_at, 1),
                "withdrawn from index at": None if withdrawn is None else round(withdrawn, 1),
                "halted": withdrawn is not None,
            }


def default_state_root() -> Path | None:
    """Simulated devices' state directories on tmpfs where there is one: each device still
    writes and fsyncs atomically, but thousands of them should not queue on one real disk
    that no real phone shares."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


def run_fleet(spec: FleetSpec, seconds: float) -> FleetResult:
    return asyncio.run(Fleet(spec).run_for(seconds))


def cleanup_state(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def load_root_envelope(path: Path | None, server: str) -> dict[str, Any]:
    """The root the simulated devices ship with: a file, or the server's v1 trusted on first
    use (said out loud: pinning a root is the point of shipping one)."""
    import json
    import sys

    from packager.keys import read_json

    if path is not None:
        loaded = read_json(path)
        if not isinstance(loaded, dict):
            raise UsageError(f"{path}: not a signed root envelope")
        return loaded
    try:
        resp = httpx.get(f"{server.rstrip('/')}/v1/root/1.json", timeout=10.0)
    except httpx.HTTPError as exc:
        raise UsageError(f"cannot reach {server}: {exc}") from None
    if resp.status_code != 200:
        raise UsageError(f"{server}/v1/root/1.json: HTTP {resp.status_code}")
    print(f"note: no --root given; the devices trust root v1 from {server} on first use", file=sys.stderr)
    envelope: dict[str, Any] = json.loads(resp.content)
    return envelope


async def run_with_progress(spec: FleetSpec, seconds: float) -> FleetResult:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), transient=False
    ) as progress:
        task = progress.add_task(f"{spec.devices:,} devices", total=seconds)

        def show(t: float, snap: dict[str, int]) -> None:
            parts = ", ".join(f"{k}: {v:,}" for k, v in sorted(snap.items()))
            progress.update(
                task, completed=min(t, seconds), description=f"{spec.devices:,} devices | {parts}"
            )

        fleet = Fleet(spec, on_sample=show)
        return await fleet.run_for(seconds)
