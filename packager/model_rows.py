"""Rows drawn from a fitted model itself, for parity and golden vectors when the release
engineer gives no ``--calibration`` rows (docs/packager.md, "Rows without calibration").

``plan_rows`` reads what the model's fitted statistics say about its *input* space:

* a box ``[low, high]`` per feature: a scaler's statistics (StandardScaler mean_ ± 4
  scale_, MinMaxScaler data_min_/data_max_, MaxAbsScaler ± max_abs_, RobustScaler
  center_ ± 3 IQR), a PCA's mean_ and spread along its components, our reconstruction
  detectors' scaler, an EllipticEnvelope's location_ and covariance_, or the split
  thresholds of an IsolationForest (mapped back through the scalers in front of it);
* *seeds*: points where the model should see normal data (samples from those
  statistics, and the centres of the deepest leaves of every tree of an IsolationForest,
  intersected with the consensus of the other deep leaves), mapped back to input space
  with the scalers' own ``inverse_transform``.

``draw`` evaluates the seeds with the reference, hill-climbs on its decision function
while fewer than ``MIN_NORMAL`` of them are normal, and returns the parity rows (half
uniform over the box, half close to the normal seeds, as ``rows_from_ranges`` draws).

Synthetic rows only probe what the statistics imply: a model's real inputs (correlated
features, discrete values) are not in them, which is why the packager still recommends
``--calibration``. A model whose statistics do not bound its inputs is refused with one
error naming ``--calibration``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from packager.errors import UsageError
from packager.manifest import RowSource

__all__ = ["RowPlan", "RowSource", "climb", "draw", "plan_rows", "rows_from_ranges"]

Floats = NDArray[np.float64]
Reference = Callable[[NDArray[np.float32]], tuple[NDArray[np.int64], NDArray[np.floating]]]

MIN_NORMAL = 32  # normal seeds wanted before drawing: golden rows need 14, parity many
CLIMB_ROUNDS = 40
SEED_SAMPLES = 400


@dataclass(frozen=True)
class RowPlan:
    source: RowSource
    low: Floats
    high: Floats
    seeds: Floats  # input-space points to start from (may be empty)
    note: str  # what the rows came from, in words, for the manifest and the progress line


def refuse(what: str, why: str) -> UsageError:
    return UsageError(
        f"{what}: {why}, so the packager cannot draw parity and golden rows itself; "
        "pass --calibration ROWS (a CSV or .npy of representative inputs)"
    )


# --------------------------------------------------------------------------- statistics


def _standard(mean: Floats, scale: Floats, rng: np.random.Generator) -> tuple[Floats, Floats, Floats]:
    seeds = mean + rng.normal(0.0, 1.0, size=(SEED_SAMPLES, mean.shape[0])) * scale
    return mean - 4 * scale, mean + 4 * scale, seeds


def _padded(low: Floats, high: Floats, rng: np.random.Generator) -> tuple[Floats, Floats, Floats]:
    pad = 0.1 * np.maximum(high - low, 1e-3)
    seeds = rng.uniform(low, np.where(high > low, high, low + 1e-3), size=(SEED_SAMPLES, low.shape[0]))
    return low - pad, high + pad, seeds


def step_statistics(step: Any, rng: np.random.Generator) -> tuple[Floats, Floats, Floats, str] | None:
    """(low, high, seeds, what) in ``step``'s input space, or None if it reveals none."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

    name = type(step).__name__
    if isinstance(step, StandardScaler):
        n = int(step.n_features_in_)
        mean = np.zeros(n) if step.mean_ is None else np.asarray(step.mean_, dtype=np.float64)
        if step.scale_ is None:
            return None
        return (*_standard(mean, np.asarray(step.scale_, dtype=np.float64), rng), f"{name} mean_/scale_")
    if isinstance(step, MinMaxScaler):
        low, high = np.asarray(step.data_min_, np.float64), np.asarray(step.data_max_, np.float64)
        return (*_padded(low, high, rng), f"{name} data_min_/data_max_")
    if isinstance(step, MaxAbsScaler):
        m = np.asarray(step.max_abs_, dtype=np.float64)
        return (*_padded(-m, m, rng), f"{name} max_abs_")
    if isinstance(step, RobustScaler):
        if step.scale_ is None:
            return None
        n = int(step.n_features_in_)
        centre = np.zeros(n) if step.center_ is None else np.asarray(step.center_, np.float64)
        # scale_ is the interquartile range: about 1.35 standard deviations of a normal
        return (*_standard(centre, np.asarray(step.scale_, np.float64) / 1.35, rng), f"{name} center_/scale_")
    if isinstance(step, PCA):
        mean = np.asarray(step.mean_, dtype=np.float64)
        comp, var = np.asarray(step.components_, np.float64), np.asarray(step.explained_variance_, np.float64)
        spread = np.sqrt((comp**2 * var[:, None]).sum(axis=0) + float(step.noise_variance_))
        z = rng.normal(0.0, 1.0, size=(SEED_SAMPLES, var.shape[0])) * np.sqrt(var)
        return mean - 4 * spread, mean + 4 * spread, mean + z @ comp, f"{name} mean_/components_"
    return None


def _is_identity_on_finite(step: Any) -> bool:
    """Steps that leave finite inputs unchanged (an imputer only fills NaN)."""
    from sklearn.impute import SimpleImputer

    return isinstance(step, SimpleImputer) and not step.add_indicator


def _invertible(step: Any) -> bool:
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

    return isinstance(step, StandardScaler | MinMaxScaler | MaxAbsScaler | RobustScaler)


# --------------------------------------------------------------------------- forests


def _average_path(n: NDArray[np.int64]) -> Floats:
    """scikit-learn's c(n): the average path length an isolation tree adds for n samples."""
    n = np.asarray(n, dtype=np.float64)
    harmonic = np.log(np.maximum(n - 1.0, 1.0)) + np.euler_gamma
    deep = 2.0 * harmonic - 2.0 * (n - 1.0) / np.maximum(n, 1.0)
    return np.where(n > 2, deep, np.where(n == 2, 1.0, 0.0))


def _leaf_boxes(
    tree: Any, feats: NDArray[np.intp], n_features: int
) -> tuple[Floats, Floats, Floats, NDArray[np.intp]]:
    """Per node: its box (low, high) in the forest's input space and its depth."""
    t = tree.tree_
    low = np.full((t.node_count, n_features), -np.inf)
    high = np.full((t.node_count, n_features), np.inf)
    depth = np.zeros(t.node_count)
    for node in range(t.node_count):  # parents come before their children in sklearn's trees
        left, right = t.children_left[node], t.children_right[node]
        if left == -1:
            continue
        f, thr = feats[t.feature[node]], t.threshold[node]
        for child in (left, right):
            low[child], high[child], depth[child] = low[node], high[node], depth[node] + 1
        high[left, f] = min(high[left, f], thr)
        low[right, f] = max(low[right, f], thr)
    leaves = np.flatnonzero(t.children_left == -1)
    return low, high, depth, leaves


def forest_statistics(forest: Any, per_tree: int = 2) -> tuple[Floats, Floats, Floats]:
    """(low, high, seeds) of an IsolationForest in its input space: the thresholds' range,
    padded, and one point inside each of the ``per_tree`` deepest leaves of every tree
    (depth plus scikit-learn's c(samples left)): where a tree isolates slowest is where
    its training data was dense. A leaf's unbounded sides take the median of the other
    deep leaves' centres, so the point sits where those leaves overlap."""
    n = int(forest.n_features_in_)
    lows, highs = [], []
    t_low, t_high = np.full(n, np.inf), np.full(n, -np.inf)
    for tree, feats in zip(forest.estimators_, forest.estimators_features_, strict=True):
        feats = np.asarray(feats)
        split = tree.tree_.children_left != -1
        f = feats[tree.tree_.feature[split]]
        np.minimum.at(t_low, f, tree.tree_.threshold[split])
        np.maximum.at(t_high, f, tree.tree_.threshold[split])
        low, high, depth, leaves = _leaf_boxes(tree, feats, n)
        effective = depth[leaves] + _average_path(tree.tree_.n_node_samples[leaves])
        best = leaves[np.argsort(-effective, kind="stable")[:per_tree]]
        lows.append(low[best])
        highs.append(high[best])
    t_low, t_high = np.where(np.isfinite(t_low), t_low, 0.0), np.where(np.isfinite(t_high), t_high, 1.0)
    pad = 0.1 * np.maximum(t_high - t_low, 1e-3)
    box_low, box_high = t_low - pad, t_high + pad
    low, high = np.vstack(lows), np.vstack(highs)
    bounded = np.isfinite(low) & np.isfinite(high)
    centre = np.where(bounded, (np.where(bounded, low, 0) + np.where(bounded, high, 0)) / 2, np.nan)
    counts = bounded.sum(axis=0)
    consensus = np.where(
        counts > 0,
        np.nanmedian(np.where(counts > 0, centre, 0.0), axis=0),
        (box_low + box_high) / 2,
    )
    seeds = np.where(bounded, centre, np.clip(consensus, low, high))
    return box_low, box_high, np.clip(seeds, box_low, box_high)


# --------------------------------------------------------------------------- plans


def plan_rows(reference: Any, seed: int = 0) -> RowPlan:
    """What the reference (``packager.convert.as_reference``'s object) reveals; raises
    UsageError naming --calibration where nothing bounds its inputs."""
    from sklearn.covariance import EllipticEnvelope
    from sklearn.ensemble import IsolationForest
    from sklearn.pipeline import Pipeline

    from packager.detectors import ClassifierDetector, IsolationForestDetector, _ReconstructionDetector

    rng = np.random.default_rng(seed)
    what = type(reference).__name__
    if isinstance(reference, _ReconstructionDetector):
        mean = np.asarray(reference.scaler_.mean_, np.float64)
        low, high, seeds = _standard(mean, np.asarray(reference.scaler_.scale_, np.float64), rng)
        return RowPlan("model-statistics", low, high, seeds, f"{what}: its StandardScaler's mean_/scale_")
    if isinstance(reference, ClassifierDetector):
        reference, what = reference.estimator, f"{what}({type(reference.estimator).__name__})"
    if isinstance(reference, IsolationForestDetector):
        reference = reference.model_
    if isinstance(reference, IsolationForest):
        low, high, seeds = forest_statistics(reference)
        return RowPlan("tree-leaves", low, high, seeds, f"{what}: split thresholds and deepest leaves")
    if isinstance(reference, EllipticEnvelope):
        loc, cov = np.asarray(reference.location_, np.float64), np.asarray(reference.covariance_, np.float64)
        spread = np.sqrt(np.maximum(np.diag(cov), 0.0))
        seeds = rng.multivariate_normal(loc, cov, size=SEED_SAMPLES, method="eigh")
        # past the Mahalanobis distance at the threshold (sqrt(-offset_)), so the box holds
        # rows on both sides however far out contamination put it
        radius = max(4.0, 1.5 * float(np.sqrt(max(-float(reference.offset_), 0.0))))
        return RowPlan(
            "model-statistics", loc - radius * spread, loc + radius * spread, seeds,
            f"{what}: location_/covariance_/offset_",
        )
    if isinstance(reference, Pipeline):
        return _pipeline_plan(reference, rng)
    raise refuse(what, "its fitted statistics do not bound its inputs")


def _pipeline_plan(pipe: Any, rng: np.random.Generator) -> RowPlan:
    """The first step that reveals its input space bounds the rows; an IsolationForest
    behind scalers and imputers only adds its deep-leaf seeds, mapped back through them."""
    from sklearn.ensemble import IsolationForest

    steps = [s for _, s in pipe.steps if s not in (None, "passthrough")]
    *front, last = steps
    found: tuple[Floats, Floats, Floats, str] | None = None
    for step in front:
        found = step_statistics(step, rng)
        if found is not None or not _is_identity_on_finite(step):
            break
    notes = [] if found is None else [found[3]]
    seeds = [] if found is None else [found[2]]
    low = high = None if found is None else found[0]
    if found is not None:
        low, high = found[0], found[1]
    if isinstance(last, IsolationForest) and all(_invertible(s) or _is_identity_on_finite(s) for s in front):
        f_low, f_high, f_seeds = forest_statistics(last)
        for step in reversed([s for s in front if _invertible(s)]):
            f_low, f_high = step.inverse_transform(f_low[None])[0], step.inverse_transform(f_high[None])[0]
            f_seeds = step.inverse_transform(f_seeds)
        seeds.append(f_seeds)
        notes.append("IsolationForest deepest leaves")
        if low is None or high is None:
            low, high = np.minimum(f_low, f_high), np.maximum(f_low, f_high)
    if low is None or high is None:
        first = type(front[0]).__name__ if front else type(last).__name__
        raise refuse(f"Pipeline ({first} first)", "none of its steps' fitted statistics bound its inputs")
    source: RowSource = "tree-leaves" if notes == ["IsolationForest deepest leaves"] else "model-statistics"
    return RowPlan(source, low, high, np.vstack(seeds), "Pipeline: " + ", ".join(notes))


# --------------------------------------------------------------------------- drawing


def rows_from_ranges(
    low: NDArray[np.floating], high: NDArray[np.floating], base: NDArray[np.floating] | None, n: int,
    seed: int = 0,
) -> NDArray[np.float32]:
    """Half uniform over [low, high] per feature, half real rows with small noise
    (1% of each feature's range): the first probe the whole space, the second the
    neighbourhood of real data, where the threshold sits."""
    rng = np.random.default_rng(seed)
    span = np.where(high > low, high - low, 1.0)
    uniform = rng.uniform(low, low + span, size=(n - n // 2, low.shape[0]))
    if base is None or base.shape[0] == 0:
        centre = rng.uniform(low, low + span, size=(n // 2, low.shape[0]))
    else:
        centre = np.asarray(base[rng.integers(0, base.shape[0], size=n // 2)], dtype=np.float64)
    perturbed = centre + rng.normal(0.0, 0.01, size=centre.shape) * span
    return np.vstack([uniform, perturbed]).astype(np.float32)


def climb(
    reference: Reference, start: Floats, low: Floats, high: Floats, *, want: int, direction: int,
    rounds: int = CLIMB_ROUNDS, seed: int = 0,
) -> Floats:
    """Hill-climb ``start`` on the reference's decision function (``direction`` +1 toward
    normal, -1 toward anomalous) until ``want`` rows carry that label: each round a row
    takes a few coordinates from another row (crossover) and a small step, and keeps the
    move if it improved. One reference call per round, on the whole population."""
    rng = np.random.default_rng(seed)
    x = np.clip(start, low, high).astype(np.float32).astype(np.float64)
    label, score = reference(x.astype(np.float32))
    span = np.where(high > low, high - low, 1.0)
    for _ in range(rounds):
        if int(np.sum(label == direction)) >= want:
            break
        other = x[rng.integers(0, len(x), len(x))]
        mask = rng.random(x.shape) < 0.15
        step = rng.normal(0.0, 0.02, x.shape) * span * (rng.random(x.shape) < 0.1)
        proposal = np.clip(np.where(mask, other, x) + step, low, high).astype(np.float32)
        p_label, p_score = reference(proposal)
        better = direction * (p_score - score) > 0
        x[better], score[better], label[better] = proposal[better], p_score[better], p_label[better]
    return x


def normal_seeds(plan: RowPlan, reference: Reference, want: int = MIN_NORMAL) -> Floats:
    """The plan's seeds the reference calls normal, hill-climbed from the best ones while
    fewer than ``want`` are."""
    seeds = np.clip(plan.seeds, plan.low, plan.high) if plan.seeds.size else plan.seeds
    if seeds.size == 0:
        rng = np.random.default_rng(0)
        size = (SEED_SAMPLES, plan.low.shape[0])
        seeds = rng.uniform(plan.low, np.maximum(plan.high, plan.low + 1e-3), size=size)
    label, score = reference(seeds.astype(np.float32))
    if int(np.sum(label == 1)) < want:
        best = seeds[np.argsort(-score, kind="stable")[: 2 * want]]
        seeds = np.vstack([seeds, climb(reference, best, plan.low, plan.high, want=want, direction=1)])
        label, _ = reference(seeds.astype(np.float32))
    normal: Floats = seeds[label == 1]
    return normal


def draw(plan: RowPlan, reference: Reference, n: int) -> tuple[NDArray[np.float32], int]:
    """``n`` parity rows from the plan and how many normal seeds they were drawn around;
    raises UsageError (naming --calibration) when no seed is normal, since no golden set
    with both labels could be built from them."""
    normal = normal_seeds(plan, reference)
    if normal.shape[0] == 0:
        raise refuse(
            plan.note.split(":")[0], "no row drawn from its statistics is one it calls normal"
        )
    # Around the seeds, not on them: a deep leaf's centre sits within float32 rounding of
    # its thresholds, where a converter that scales in float32 legitimately differs.
    return rows_from_ranges(plan.low, plan.high, normal, n), int(normal.shape[0])
