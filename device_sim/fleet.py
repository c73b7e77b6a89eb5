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
import os
import random
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from device_sim.device import register
from device_sim.faults import FaultyTransport
from device_sim.fleet_golden import SharedGolden
from device_sim.fleet_network import NETWORK_MIX, PROFILES, OfflineSwitch
from device_sim.fleet_report import FleetResult, IndexEntryView, bucket_checks, convergence, health_gate
from device_sim.fleet_scoring import FleetScorer
from device_sim.store import Store
from device_sim.transfer import SyncConfig
from device_sim.updater import SyncResult, Updater, next_delay
from packager.errors import ModelSyncError, UsageError
from packager.rollout import rollout_bucket

PLATFORMS = {"android": 0.45, "ios": 0.35, "linux": 0.20}
OLD_RUNTIME = "1.22.0"  # older than any artifact this onnxruntime 1.24 writes
POOL_SIZE = 16
KEEPALIVE_S = 3.0


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
    score_rows: int = 0  # telemetry rows each device scores per poll and reports (fleet_scoring.py)

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


class Fleet:
    def __init__(
        self, spec: FleetSpec, *, on_sample: Callable[[float, dict[str, int]], None] | None = None
    ) -> None:
        self.spec = spec
        self.devices = plan_devices(spec)
        self.golden = SharedGolden()
        self.scorer = FleetScorer(spec.score_rows, spec.seed, self.golden.cache)
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
        self.index_versions: list[tuple[float, int, list[IndexEntryView]]] = []
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

    async def stop(self, drain_s: float = 0.0) -> FleetResult:
        """Stop every device. With ``drain_s``, syncs in flight may finish first (up to that
        long), so that what the service received is also in this fleet's accounting."""
        self._stop.set()
        if drain_s > 0 and self._tasks:
            await asyncio.wait(self._tasks, timeout=drain_s)
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
        transport = OfflineSwitch(device.faults, lambda: device.offline_at(self.now()))
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
        self.scorer.score(device.updater.store, device.rng)  # what it installed scores telemetry
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
        if result.status in ("failed", "offline"):
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
            IndexEntryView(model, int(e["version"]), float(e["rollout"]["percent"]), e["rollout"]["salt"])
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
        pool = self.eligible()
        r.buckets = bucket_checks(self.index_versions, self._phase_last, self._install_index, pool)
        r.converged = convergence(self.index_versions, r.timeline, pool, self._install_at,
                                  self.spec.poll_interval_s)
        r.health_gate = health_gate(self.index_versions, self._golden_failed_by_version, self.devices)


def default_state_root() -> Path | None:
    """Simulated devices' state directories on tmpfs where there is one: each device still
    writes and fsyncs atomically, but thousands of them should not queue on one real disk
    that no real phone shares."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


def run_fleet(spec: FleetSpec, seconds: float) -> FleetResult:
    return asyncio.run(Fleet(spec).run_for(seconds))
