"""Simulated devices score telemetry between syncs and report what their model did.

Each poll, a device draws ``rows`` rows from a shared pool of synthetic telemetry
(packager.telemetry: the same generator the demo trains on, with its injected incidents),
scores them with every model it has installed — one onnxruntime session per artifact,
shared by the whole fleet (fleet_golden.SessionCache) — and queues one ``behaviour`` report
per model version (device_sim/behaviour.py), which the next sync sends. A model trained on
telemetry in other units passes every byte and golden check and then shows here: its
anomaly rate in the field is nothing like its incumbent's.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device_sim.behaviour import Window
from device_sim.fleet_golden import SessionCache
from device_sim.shadow import AgreementWindow
from device_sim.store import Store
from packager.manifest import ModelManifest, format_time, utcnow

POOL_ROWS = 20_000


@dataclass
class FleetScorer:
    rows: int  # per device per poll
    seed: int = 0
    cache: SessionCache = field(default_factory=SessionCache)
    scored: int = 0
    _pool: Any = None
    _manifests: dict[str, ModelManifest] = field(default_factory=dict)

    def pool(self) -> Any:
        if self._pool is None:
            from packager.telemetry import generate_telemetry  # pandas: only when scoring

            self._pool = generate_telemetry(POOL_ROWS, seed=self.seed).frame
        return self._pool

    def _manifest(self, store: Store, inst: Any) -> ModelManifest:
        """One parse per manifest for the whole fleet (devices share versions)."""
        hit = self._manifests.get(inst.manifest_sha256)
        if hit is None:
            hit = self._manifests[inst.manifest_sha256] = store.manifest(inst)
        return hit

    def score(self, store: Store, rng: random.Random) -> None:
        """Score one poll's rows with each installed model; queue their behaviour reports
        (nothing when the fleet scores no rows)."""
        if self.rows <= 0 or not store.model_names():
            return
        frame = self.pool()
        start = rng.randrange(0, len(frame) - self.rows)
        for name in store.model_names():
            inst = store.usable(name)
            if inst is None:
                continue
            manifest = self._manifest(store, inst)
            columns = [f.name for f in manifest.model.features]
            x = np.ascontiguousarray(frame[columns].to_numpy(dtype=np.float32)[start:start + self.rows])
            path = store.artifact_path(inst)
            engine = self.cache.get(inst.artifact_sha256, path.read_bytes)
            t0 = time.perf_counter()
            prediction = engine.predict(x)
            seconds = time.perf_counter() - t0
            profile = manifest.behaviour
            window = Window(edges=list(profile.score_edges) if profile else None, since=format_time(utcnow()))
            window.observe(prediction.labels, prediction.scores, seconds, engine.provider)
            store.enqueue("behaviour", model=name, version=inst.version, data=window.report())
            self.scored += self.rows
            self._shadow(store, name, inst.version, x, prediction)

    def _shadow(self, store: Store, name: str, active_version: int, x: np.ndarray, active: Any) -> None:
        """A held shadow candidate scores the same rows; one poll's rows are one agreement
        window here (a device's report_after is at most a poll's rows in the simulator)."""
        held = store.held_shadow(name)
        if held is None:
            return
        _, artifact = store.held_files(held)
        shadow = self.cache.get(held.inst.artifact_sha256, artifact.read_bytes).predict(x)
        window = AgreementWindow(held.inst.version, active_version, format_time(utcnow()))
        window.observe(active.labels, active.scores, shadow.labels, shadow.scores)
        store.enqueue("shadow", model=name, version=held.inst.version, data=window.report())
