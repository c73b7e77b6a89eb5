"""Latency bookkeeping and Prometheus instruments for the inference engines.

The names and labels are the ones the original README recommends, so existing dashboards
keep working: ``model_inference_duration_seconds{engine_type,provider}`` and
``model_inference_total{engine_type,status}``.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram

# Engines register here unless given a registry; a separate registry (not the process
# global) so several engines or tests in one process never clash over metric names.
ENGINE_REGISTRY = CollectorRegistry(auto_describe=True)

_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


@dataclass(frozen=True)
class Instruments:
    duration: Histogram
    total: Counter


_instruments: dict[int, tuple[CollectorRegistry, Instruments]] = {}
_lock = threading.Lock()


def instruments(registry: CollectorRegistry | None = None) -> Instruments:
    """One pair of metrics per registry (registering a name twice raises in prometheus_client)."""
    reg = registry if registry is not None else ENGINE_REGISTRY
    with _lock:
        hit = _instruments.get(id(reg))
        if hit is not None and hit[0] is reg:
            return hit[1]
        made = Instruments(
            duration=Histogram(
                "model_inference_duration_seconds",
                "Model inference duration",
                ["engine_type", "provider"],
                registry=reg,
                buckets=_BUCKETS,
            ),
            total=Counter(
                "model_inference_total",
                "Total inference requests",
                ["engine_type", "status"],
                registry=reg,
            ),
        )
        _instruments[id(reg)] = (reg, made)
        return made


@dataclass(frozen=True)
class InferenceMetrics:
    """What ``engine.get_metrics()`` returns. Times in milliseconds; percentiles over the
    most recent calls (a bounded window), totals over the engine's life."""

    inference_time_ms: float  # the last call
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    throughput_samples_per_sec: float
    total_inferences: int
    total_samples: int
    errors: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class LatencyRecorder:
    def __init__(self, window: int = 10_000) -> None:
        self._ms: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()
        self._calls = 0
        self._samples = 0
        self._seconds = 0.0
        self._errors = 0
        self._last_ms = 0.0

    def record(self, seconds: float, samples: int) -> None:
        with self._lock:
            self._ms.append(seconds * 1000.0)
            self._last_ms = seconds * 1000.0
            self._calls += 1
            self._samples += samples
            self._seconds += seconds

    def record_error(self) -> None:
        with self._lock:
            self._errors += 1

    def snapshot(self) -> InferenceMetrics:
        with self._lock:
            window = np.fromiter(self._ms, dtype=np.float64, count=len(self._ms))
            calls, samples, seconds = self._calls, self._samples, self._seconds
            errors, last = self._errors, self._last_ms
        if window.size:
            p50, p95, p99 = (float(v) for v in np.percentile(window, [50, 95, 99]))
            mean = float(window.mean())
        else:
            p50 = p95 = p99 = mean = 0.0
        return InferenceMetrics(
            inference_time_ms=last,
            mean_ms=mean,
            p50_ms=p50,
            p95_ms=p95,
            p99_ms=p99,
            throughput_samples_per_sec=samples / seconds if seconds > 0 else 0.0,
            total_inferences=calls,
            total_samples=samples,
            errors=errors,
        )
