"""What a device's model did since its last report, per model version: rows scored, anomalies,
the score histogram in the manifest's bins, latency p50/p95 per call, the provider that ran
it. Only these aggregates leave the device (a ``behaviour`` report, docs/behaviour.md); no
telemetry row does.

Bounded: the histogram has the manifest's bin count (at most packager.behaviour.MAX_BINS);
latencies are kept for at most LATENCY_SAMPLES calls per window (a reservoir beyond, seeded,
so a run is repeatable), percentiles by nearest rank."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from packager.behaviour import histogram, nearest_rank

LATENCY_SAMPLES = 512


@dataclass
class Window:
    edges: list[float] | None  # the manifest's bins; None: a manifest without a profile
    since: str
    rows: int = 0
    anomalies: int = 0
    calls: int = 0
    counts: list[int] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    provider: str = ""
    _rng: random.Random = field(default_factory=lambda: random.Random(0))

    def observe(self, labels: np.ndarray, scores: np.ndarray, seconds: float, provider: str) -> None:
        self.calls += 1
        self.rows += int(labels.shape[0])
        self.anomalies += int((labels == -1).sum())
        if self.edges is not None:
            add = histogram(self.edges, scores.astype(np.float64).tolist())
            self.counts = [a + b for a, b in zip(self.counts or [0] * len(add), add, strict=True)]
        ms = seconds * 1000.0
        if len(self.latencies_ms) < LATENCY_SAMPLES:
            self.latencies_ms.append(ms)
        else:  # reservoir: every call kept with the same chance
            j = self._rng.randrange(self.calls)
            if j < LATENCY_SAMPLES:
                self.latencies_ms[j] = ms
        self.provider = provider

    def report(self) -> dict[str, Any]:
        """The ``data`` of a ``behaviour`` report (docs/protocol.md)."""
        return {
            "since": self.since,
            "rows": self.rows,
            "anomalies": self.anomalies,
            "calls": self.calls,
            "histogram": self.counts if self.edges is not None else [],
            "latency_ms": {"p50": round(nearest_rank(self.latencies_ms, 0.5), 4),
                           "p95": round(nearest_rank(self.latencies_ms, 0.95), 4)},
            "provider": self.provider,
        }


@dataclass
class BandCheck:
    """A freshly activated version's first ``rows`` rows against the manifest's expected
    anomaly-rate band: judged once, when they have been scored (docs/behaviour.md)."""

    band: tuple[float, float]
    rows: int
    seen: int = 0
    anomalies: int = 0
    judged: bool = False

    def observe(self, labels: np.ndarray) -> dict[str, Any] | None:
        """None while counting or once passed; the report's data the moment it falls outside."""
        if self.judged:
            return None
        self.seen += int(labels.shape[0])
        self.anomalies += int((labels == -1).sum())
        if self.seen < self.rows:
            return None
        self.judged = True
        rate = self.anomalies / self.seen
        lo, hi = self.band
        if lo <= rate <= hi:
            return None
        return {"rows": self.seen, "anomalies": self.anomalies, "anomaly_rate": round(rate, 6),
                "expected_band": [lo, hi]}
