"""The fleet's golden-vector runner: one onnxruntime session per artifact sha256, shared
by every simulated device in the process (checks 4.3, 4.4 run as on a real device)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable

import numpy as np
from prometheus_client import CollectorRegistry

from device_sim import errors
from device_sim.engine import EngineError, OnnxEngine
from packager.manifest import GoldenVectors


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
        sha = hashlib.sha256(data).hexdigest()
        try:
            engine = self.cache.get(sha, lambda: data)
            pred = engine.predict(np.asarray(golden.inputs, dtype=np.float32))
        except EngineError as exc:
            raise errors.ArtifactLoadError(str(exc)) from None
        self.runs += 1
        return [int(v) for v in pred.labels], [float(v) for v in pred.scores]
