"""Golden vectors: a few dozen reference inputs with the scikit-learn reference outputs,
and the tolerance each artifact must meet before a device activates it (docs/architecture.md, check 4).

Choosing the rows (``select_golden_rows``) needs the reference model; checking them
(``golden_deviation``, ``check_golden``) needs only numpy, so a device can import this
module without a trainer.

How the rows are chosen, honestly: spread over the normal scores (quantiles), the most
anomalous rows of the pool, a few rows nearest the decision threshold (where a
reduced-precision artifact may legitimately flip the label, so the tolerance counts
them), and the rows holding the extreme values of a few features. All are real rows of
the pool: synthetic rows beyond its range would measure an INT8 model's saturation (its
activation ranges come from the same calibration rows), not its fidelity.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from packager.errors import BundleError, UsageError
from packager.manifest import GoldenTolerance, GoldenVectors

N_NORMAL = 14
N_ANOMALOUS = 8
N_NEAR_THRESHOLD = 4
N_EDGE = 4

# Lowest score tolerance per precision, whatever the measured deviation: headroom for a
# device's runtime (another CPU, another BLAS) computing in a different order.
SCORE_ATOL_FLOOR = {"fp32": 1e-5, "fp16": 2e-3, "int8": 1e-2}
# The tolerance is this many times the deviation measured here on the golden rows.
HEADROOM = 4.0

Outputs = tuple[NDArray[np.int64], NDArray[np.float32]]


def as_inputs(rows: NDArray[np.floating] | list[list[float]]) -> NDArray[np.float32]:
    """The float32 matrix every artifact takes; golden inputs are stored as these values."""
    x = np.asarray(rows, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise UsageError(f"golden rows must be a non-empty 2-D array, got shape {x.shape}")
    return x


def select_golden_rows(
    pool: NDArray[np.floating],
    reference: Callable[[NDArray[np.float32]], Outputs],
    threshold: float,
) -> GoldenVectors:
    """Pick about 30 rows from ``pool`` (calibration or held-out data) and record the
    reference outputs on exactly the float32 values a device will feed."""
    x = as_inputs(pool)
    if not np.isfinite(x).all():
        raise UsageError("golden candidate rows contain NaN or inf")
    _, score = reference(x)
    score = np.asarray(score, dtype=np.float64)
    order = np.argsort(score, kind="stable")
    chosen: list[int] = []

    def take(indices: NDArray[np.intp] | list[int]) -> None:
        for i in indices:
            if int(i) not in chosen:
                chosen.append(int(i))

    normal = order[score[order] >= threshold]
    if len(normal):
        take(normal[np.linspace(0, len(normal) - 1, min(N_NORMAL, len(normal))).round().astype(int)])
    take(order[:N_ANOMALOUS])
    take(np.argsort(np.abs(score - threshold), kind="stable")[:N_NEAR_THRESHOLD])
    take(_edge_rows(x))
    inputs = x[chosen]
    label, ref_score = reference(inputs)
    return GoldenVectors(
        inputs=[[float(v) for v in row] for row in inputs],
        label=[int(v) for v in np.asarray(label)],
        score=[float(v) for v in np.asarray(ref_score, dtype=np.float64)],
    )


def _edge_rows(x: NDArray[np.float32]) -> list[int]:
    """Indices of the rows holding the largest and smallest values of the first features,
    alternately: real rows at the edge of what the pool has seen."""
    n = x.shape[1]
    sides = [(j, j % 2 == 0) for j in range(n)] + [(j, j % 2 == 1) for j in range(n)]
    return [int(np.argmax(x[:, j]) if high else np.argmin(x[:, j])) for j, high in sides[:N_EDGE]]


@dataclass(frozen=True)
class Deviation:
    max_abs_score_diff: float
    label_mismatches: int


def golden_deviation(golden: GoldenVectors, outputs: Outputs) -> Deviation:
    labels = np.asarray(outputs[0]).reshape(-1)
    scores = np.asarray(outputs[1], dtype=np.float64).reshape(-1)
    n = len(golden.inputs)
    if labels.shape[0] != n or scores.shape[0] != n:
        raise BundleError(f"artifact gave {labels.shape[0]} labels, {scores.shape[0]} scores for {n} rows")
    mismatches = int(np.sum(labels != np.asarray(golden.label)))
    if not np.isfinite(scores).all():
        return Deviation(float("inf"), mismatches)
    return Deviation(float(np.abs(scores - np.asarray(golden.score)).max()), mismatches)


def tolerance_for(
    golden: GoldenVectors, precision: str, measured: Deviation, threshold: float
) -> GoldenTolerance:
    """``score_atol = max(HEADROOM * measured, floor[precision])``; label flips are allowed
    only for rows whose reference score lies within ``score_atol`` of the threshold (and
    never fewer than measured here, which such rows are by construction)."""
    atol = max(HEADROOM * measured.max_abs_score_diff, SCORE_ATOL_FLOOR.get(precision, 1e-2))
    atol = _round_up(atol)
    near = int(np.sum(np.abs(np.asarray(golden.score) - threshold) <= atol))
    return GoldenTolerance(score_atol=atol, max_label_mismatches=max(near, measured.label_mismatches))


def _round_up(value: float) -> float:
    """Up to two significant digits, so the manifest stays readable; never below ``value``."""
    if value <= 0 or not math.isfinite(value):
        return value
    step = 10.0 ** (math.floor(math.log10(value)) - 1)
    rounded = float(f"{math.ceil(value / step - 1e-9) * step:.2g}")
    return rounded if rounded >= value else float(f"{rounded + step:.2g}")


def check_golden(golden: GoldenVectors, tolerance: GoldenTolerance, outputs: Outputs, what: str) -> Deviation:
    """Raise ``BundleError`` unless ``outputs`` meet ``tolerance``; returns the deviation."""
    dev = golden_deviation(golden, outputs)
    if not dev.max_abs_score_diff <= tolerance.score_atol:
        raise BundleError(
            f"{what}: golden vectors off by {dev.max_abs_score_diff:.3g} in score, "
            f"tolerance is {tolerance.score_atol:.3g}"
        )
    if dev.label_mismatches > tolerance.max_label_mismatches:
        raise BundleError(
            f"{what}: {dev.label_mismatches} golden label(s) differ from the reference, "
            f"tolerance is {tolerance.max_label_mismatches}"
        )
    return dev
