"""A model's expected behaviour, signed in its manifest, and the arithmetic every party
uses to compare field behaviour with it (docs/behaviour.md).

The packager records, from the reference model's scores on the parity rows: the score
histogram's bin edges (deciles of those scores), the share of rows in each bin, and the
reference's anomaly rate. A device counts what it scores into the same bins; the service
adds devices' counts up and compares them with the manifest's histogram and with the
incumbent model's, by the population stability index.

Bins are total: with interior edges ``e[0] < … < e[B-2]`` a score ``s`` falls in bin
``i = #{k : e[k] <= s}`` (so below ``e[0]`` is bin 0, at or above ``e[B-2]`` is bin
``B-1``), and a NaN score, which no edge orders, in the last bin. The TypeScript client
implements the same rule (react-native-stub/src/core/behaviour.ts); tests/vectors/
behaviour.json holds the cases both run.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:  # numpy only where profiles are made: the base install reads manifests without it
    from numpy.typing import NDArray

BINS = 10
MAX_BINS = 64  # a report's histogram is bounded by the manifest's bin count, and this by it
# PSI's customary floor for an empty bin: without it one empty bin makes the index infinite
PSI_EPSILON = 1e-4



class BehaviourProfile(BaseModel):
    """What the reference model does on the parity rows, for judging field behaviour
    (docs/behaviour.md). Signed in the manifest (packager.manifest.ModelManifest.behaviour);
    unknown fields are kept and ignored, as in every signed document."""

    model_config = ConfigDict(extra="allow", frozen=True)

    score_edges: list[float] = Field(
        min_length=1, max_length=63, description="interior histogram bin edges, increasing: B-1 edges, B bins"
    )
    reference_histogram: list[float] = Field(description="share of the parity rows in each bin")
    anomaly_rate: float = Field(ge=0, le=1, description="the reference model's anomaly share on those rows")
    rows: int = Field(ge=1)
    expected_band: tuple[float, float] | None = Field(
        None, description="anomaly rate a device may see in its first rows; outside it, it falls back"
    )

    @model_validator(mode="after")
    def _consistent(self) -> BehaviourProfile:
        edges = self.score_edges
        if any(not math.isfinite(e) for e in edges) or any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError("score_edges must be finite and strictly increasing")
        if len(self.reference_histogram) != len(edges) + 1:
            raise ValueError("reference_histogram needs one share per bin (len(score_edges) + 1)")
        if self.expected_band is not None and not 0 <= self.expected_band[0] <= self.expected_band[1] <= 1:
            raise ValueError("expected_band must be 0 <= low <= high <= 1")
        return self



def bin_of(edges: Sequence[float], score: float) -> int:
    if math.isnan(score):
        return len(edges)
    return bisect.bisect_right(edges, score)


def histogram(edges: Sequence[float], scores: Iterable[float]) -> list[int]:
    counts = [0] * (len(edges) + 1)
    for s in scores:
        counts[bin_of(edges, float(s))] += 1
    return counts


def profile(labels: NDArray[Any], scores: NDArray[Any], bins: int = BINS) -> BehaviourProfile:
    """The reference model's behaviour on ``scores`` (its own scores on the parity rows):
    interior edges at its score quantiles, the share of rows per bin, its anomaly rate."""
    import numpy as np

    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        raise ValueError("no finite reference score to take bins from")
    qs = np.quantile(s, [k / bins for k in range(1, bins)])
    edges = sorted({float(np.float32(q)) for q in qs})  # ties collapse: fewer, distinct bins
    counts = histogram(edges, s.tolist())
    total = sum(counts)
    return BehaviourProfile(
        score_edges=edges,
        reference_histogram=[c / total for c in counts],
        anomaly_rate=float(np.mean(np.asarray(labels) == -1)),
        rows=int(total),
    )


def nearest_rank(values: Iterable[float], q: float) -> float:
    """The ``q`` quantile by nearest rank: the value at rank ceil(q * n), 1-based; 0 for none
    (device latencies, and the service's percentile of devices' percentiles)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return float(ordered[max(1, math.ceil(q * len(ordered))) - 1])


def psi(observed: Sequence[float], expected: Sequence[float]) -> float:
    """Population stability index of two histograms (counts or shares, same bins):
    ``sum((o - e) * ln(o / e))`` over shares, each floored at PSI_EPSILON."""
    if len(observed) != len(expected):
        raise ValueError(f"histograms of {len(observed)} and {len(expected)} bins")
    o_total, e_total = float(sum(observed)), float(sum(expected))
    if o_total <= 0 or e_total <= 0:
        return 0.0
    index = 0.0
    for o, e in zip(observed, expected, strict=True):
        p, q = max(o / o_total, PSI_EPSILON), max(e / e_total, PSI_EPSILON)
        index += (p - q) * math.log(p / q)
    return index
