"""Golden vectors: a few dozen reference inputs with the scikit-learn reference outputs,
and the tolerance each artifact must meet before a device activates it (docs/architecture.md, check 4).

Choosing the rows (``select_golden_rows``) needs the reference model; checking them
(``golden_deviation``, ``check_golden``) needs only numpy, so a device can import this
module without a trainer.

How the rows are chosen, honestly: spread over the rows the reference calls normal
(quantiles of their scores), the most anomalous rows of the pool, a few rows nearest the
decision threshold (where a reduced-precision artifact may legitimately flip the label,
so the tolerance counts them), the rows holding the extreme values of a few features,
and pairs of rows one float32 step either side of the boundary (bisected between a
normal and an anomalous row). Every bundle's set holds at least ``N_NORMAL`` normal and
``N_ANOMALOUS`` anomalous rows: a pool short of either is widened inside its own box
(uniform rows, then a hill-climb on the decision function), never beyond it, since
synthetic rows beyond its range would measure an INT8 model's saturation (its activation
ranges come from the same calibration rows), not its fidelity. ``selection`` in the
manifest records where the pool came from and the counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from packager.errors import BundleError, UsageError
from packager.manifest import GoldenSelection, GoldenTolerance, GoldenVectors, RowSource

N_NORMAL = 14
N_ANOMALOUS = 8
N_NEAR_THRESHOLD = 4
N_EDGE = 4
N_BOUNDARY_PAIRS = 3
N_POOL_EXTRA = 1000  # rows added to a pool that lacks one of the labels
# Boundary search: float32 values probed per pair per reference call. A forest's call
# costs about the same for 20 rows as for 1,000 (per-tree overhead), so wide and few.
SECTIONS = 128
MAX_SECTIONS = 6  # 128**6 > 2**32: enough to reach adjacent float32 values
MAX_WIDENING = 63  # float32 steps a pair may move apart before it is dropped

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
    *,
    source: RowSource = "calibration",
    note: str = "",
) -> GoldenVectors:
    """Pick about 35 rows from ``pool`` (calibration rows, or rows drawn from the model's
    statistics) and record the reference outputs on exactly the float32 values a device
    will feed: at least ``N_NORMAL`` rows the reference calls normal and ``N_ANOMALOUS``
    it calls anomalous (the pool is widened when it lacks either), and
    ``N_BOUNDARY_PAIRS`` pairs one float32 step apart on either side of the threshold."""
    x = as_inputs(pool)
    if not np.isfinite(x).all():
        raise UsageError("golden candidate rows contain NaN or inf")
    label, score = _outputs(reference, x)
    x, label, score = _with_both_labels(x, label, score, reference)
    order = np.argsort(score, kind="stable")
    chosen: list[int] = []

    def take(indices: NDArray[np.intp] | list[int]) -> None:
        for i in indices:
            if int(i) not in chosen:
                chosen.append(int(i))

    normal = order[label[order] == 1]
    take(normal[np.linspace(0, len(normal) - 1, min(N_NORMAL, len(normal))).round().astype(int)])
    take(order[label[order] != 1][:N_ANOMALOUS])
    take(np.argsort(np.abs(score - threshold), kind="stable")[:N_NEAR_THRESHOLD])
    take(_edge_rows(x))
    # A reference that computes in float32 (an MLP on float32 rows) scores a boundary row
    # within its own rounding of the threshold, so another batch size (BLAS blocking) may
    # put it on the other side. A pair that does not hold in the very batch whose outputs
    # are recorded is widened, 1, 3, 7, ... float32 steps further apart, until it does.
    pairs = boundary_pairs(x, label, score, reference, threshold).reshape(-1, 2, x.shape[1])
    extra = np.zeros(pairs.shape[0], dtype=np.int64)
    while True:
        inputs = np.vstack([x[chosen], widened(pairs, extra).reshape(-1, x.shape[1])])
        golden_label, golden_score = _outputs(reference, inputs)
        sides = golden_label[len(chosen) :].reshape(-1, 2)
        holds = (sides[:, 0] == 1) & (sides[:, 1] != 1)
        if holds.all():
            break
        extra[~holds] = 2 * extra[~holds] + 1
        pairs, extra = pairs[extra <= MAX_WIDENING], extra[extra <= MAX_WIDENING]
    boundary = inputs[len(chosen) :]
    return GoldenVectors(
        inputs=[[float(v) for v in row] for row in inputs],
        label=[int(v) for v in golden_label],
        score=[float(v) for v in golden_score],
        selection=GoldenSelection(
            source=source,
            normal=int(np.sum(golden_label == 1)),
            anomalous=int(np.sum(golden_label != 1)),
            boundary=int(boundary.shape[0]),
            boundary_steps=int(1 + 2 * extra.max()) if extra.size else 1,
            note=note,
        ),
    )


def _outputs(
    reference: Callable[[NDArray[np.float32]], Outputs], x: NDArray[np.float32]
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    label, score = reference(x)
    return np.asarray(label, dtype=np.int64).reshape(-1), np.asarray(score, dtype=np.float64).reshape(-1)


def _with_both_labels(
    x: NDArray[np.float32],
    label: NDArray[np.int64],
    score: NDArray[np.float64],
    reference: Callable[[NDArray[np.float32]], Outputs],
) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float64]]:
    """The pool, widened where it holds too few rows of either label: first rows drawn
    over its own box (uniform, and close to its rows), then a hill-climb on the
    reference's decision function toward the missing label. A model that calls nothing
    in that box normal (or anomalous) cannot have an honest golden set: refused."""
    from packager.model_rows import climb, rows_from_ranges

    wants = {1: N_NORMAL, -1: N_ANOMALOUS}
    if all(int(np.sum((label == 1) == (side == 1))) >= n for side, n in wants.items()):
        return x, label, score
    low, high = x.min(axis=0).astype(np.float64), x.max(axis=0).astype(np.float64)
    drawn = rows_from_ranges(low, high, x.astype(np.float64), 2 * N_POOL_EXTRA)
    extra = np.clip(drawn, low, high).astype(np.float32)  # inside the box, noise or not
    for side, n in wants.items():
        e_label, e_score = _outputs(reference, extra)
        have = int(np.sum((np.concatenate([label, e_label]) == 1) == (side == 1)))
        if have < n:
            start = extra[np.argsort(-side * e_score, kind="stable")[: 2 * n]].astype(np.float64)
            found = climb(reference, start, low, high, want=n, direction=side).astype(np.float32)
            extra = np.vstack([extra, found])
    e_label, e_score = _outputs(reference, extra)
    x = np.vstack([x, extra])
    label, score = np.concatenate([label, e_label]), np.concatenate([score, e_score])
    for side, n in wants.items():
        have = int(np.sum((label == 1) == (side == 1)))
        if have < n:
            what = "normal" if side == 1 else "anomalous"
            raise UsageError(
                f"golden vectors need {n} rows the model calls {what}; only {have} found among "
                f"{x.shape[0]} candidate rows: pass --calibration rows that include {what} examples"
            )
    return x, label, score


def boundary_pairs(
    x: NDArray[np.float32],
    label: NDArray[np.int64],
    score: NDArray[np.float64],
    reference: Callable[[NDArray[np.float32]], Outputs],
    threshold: float,
    pairs: int = N_BOUNDARY_PAIRS,
) -> NDArray[np.float32]:
    """Pairs of rows that differ in one feature by one float32 step and that the
    reference puts on opposite sides of its boundary (normal first). From a normal row
    ``a`` to an anomalous one ``b`` (those nearest the threshold), features are switched
    from ``a``'s value to ``b``'s one at a time until the label changes; that feature's
    last gap is then bisected over the float32 values between, ``SECTIONS``-fold per
    reference call. Both rows are kept: an artifact that computes the boundary a step
    off flips one of them."""
    normal = np.flatnonzero(label == 1)
    anomalous = np.flatnonzero(label != 1)
    k = min(pairs, normal.size, anomalous.size)
    n = x.shape[1]
    if k == 0:
        return np.empty((0, n), dtype=np.float32)

    def nearest(idx: NDArray[np.intp]) -> NDArray[np.intp]:
        return idx[np.argsort(np.abs(score[idx] - threshold), kind="stable")[:k]]

    a, b = x[nearest(normal)], x[nearest(anomalous)]
    # prefixes: row m of pair i has a's values with its first m features taken from b
    switched = np.arange(n + 1)[:, None] > np.arange(n)[None, :]  # [n+1, n]
    prefixes = np.where(switched[None], b[:, None, :], a[:, None, :])  # [k, n+1, n]
    p_label, _ = _outputs(reference, prefixes.reshape(-1, n))
    normal_at = (p_label == 1).reshape(k, n + 1)
    normal_at[:, 0], normal_at[:, n] = True, False  # a's and b's own labels, by choice
    feature = np.argmin(normal_at, axis=1) - 1  # the switch that made it anomalous
    lo = prefixes[np.arange(k), feature].copy()  # normal
    hi = prefixes[np.arange(k), feature + 1].copy()  # anomalous, differs in `feature` only
    rows = np.arange(k)
    k_lo, k_hi = _ordered(lo[rows, feature]), _ordered(hi[rows, feature])
    for _ in range(MAX_SECTIONS):
        open_ = np.abs(k_hi - k_lo) > 1
        if not open_.any():
            break
        # SECTIONS - 1 interior float32 values per open pair, evenly spaced in order
        steps = np.arange(1, SECTIONS)[None, :]
        probes_k = k_lo[open_, None] + (k_hi - k_lo)[open_, None] * steps // SECTIONS
        m = probes_k.shape[0]
        probe = np.repeat(lo[open_], SECTIONS - 1, axis=0)
        where = (np.arange(probe.shape[0]), np.repeat(feature[open_], SECTIONS - 1))
        probe[where] = _unordered(probes_k.reshape(-1))
        probe_label, _ = _outputs(reference, probe)
        anomalous_at = np.hstack(
            [np.zeros((m, 1), bool), (probe_label != 1).reshape(m, -1), np.ones((m, 1), bool)]
        )
        first = np.argmax(anomalous_at, axis=1)
        ends = np.hstack([k_lo[open_, None], probes_k, k_hi[open_, None]])
        k_lo[open_], k_hi[open_] = ends[np.arange(m), first - 1], ends[np.arange(m), first]
    lo[rows, feature], hi[rows, feature] = _unordered(k_lo), _unordered(k_hi)
    done = np.abs(k_hi - k_lo) == 1
    out: NDArray[np.float32] = np.stack([lo[done], hi[done]], axis=1).reshape(-1, n)
    return out


def widened(pairs: NDArray[np.float32], extra: NDArray[np.int64]) -> NDArray[np.float32]:
    """Boundary pairs ``[k, 2, n]`` moved ``extra`` float32 steps further apart, each row
    deeper into its own side, along the one feature in which they differ."""
    out = pairs.copy()
    for i in np.flatnonzero(extra):
        (j,) = np.flatnonzero(pairs[i, 0] != pairs[i, 1])
        k_lo, k_hi = _ordered(pairs[i, :, j])
        away = 1 if k_hi > k_lo else -1
        out[i, :, j] = _unordered(np.array([k_lo - away * extra[i], k_hi + away * extra[i]]))
    return out


def _ordered(v: NDArray[np.float32]) -> NDArray[np.int64]:
    """float32 values as integers in the same order, consecutive for adjacent floats."""
    bits = np.ascontiguousarray(v, dtype=np.float32).view(np.int32).astype(np.int64)
    return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)


def _unordered(k: NDArray[np.int64]) -> NDArray[np.float32]:
    bits = np.where(k < 0, (-k) | -0x80000000, k).astype(np.int32)
    out: NDArray[np.float32] = bits.view(np.float32)
    return out


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
    never fewer than measured here, which such rows are by construction), and always
    fewer than the golden set has normal or anomalous rows."""
    atol = max(HEADROOM * measured.max_abs_score_diff, SCORE_ATOL_FLOOR.get(precision, 1e-2))
    atol = _round_up(atol)
    near = int(np.sum(np.abs(np.asarray(golden.score) - threshold) <= atol))
    # Fewer flips than either label has rows: an artifact answering one label for
    # everything must miss, however loose its score tolerance.
    labels = np.asarray(golden.label)
    cap = min(int(np.sum(labels == 1)), int(np.sum(labels != 1))) - 1
    if measured.label_mismatches > cap:
        raise BundleError(
            f"{precision} artifact flips {measured.label_mismatches} golden label(s) of "
            f"{labels.size}: a golden check that allows that many cannot tell it from an "
            "artifact answering one label for every row"
        )
    flips = min(max(near, measured.label_mismatches), cap)
    return GoldenTolerance(score_atol=atol, max_label_mismatches=flips)


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
