"""Our IsolationForest converter against scikit-learn: identical labels, |score diff| <= 1e-6."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.ensemble import IsolationForest

from packager.convert import to_onnx
from packager.convert.isolation_forest import floor_float32
from packager.convert.outputs import OPSETS, check_contract


def _run(model: object, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    converted = to_onnx(model)
    session = ort.InferenceSession(converted.onnx.SerializeToString(), providers=["CPUExecutionProvider"])
    label, score = session.run(["label", "score"], {"input": X})
    return label, score


@pytest.fixture(scope="module")
def train() -> np.ndarray:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 8)).astype(np.float32)
    X[:, 3] = rng.integers(0, 5, size=2000)  # a discrete column: many rows sit on thresholds
    return X


@pytest.mark.slow
def test_60k_random_rows_identical_labels_and_scores_within_1e6(train: np.ndarray) -> None:
    forest = IsolationForest(n_estimators=100, contamination=0.05, random_state=0).fit(train)
    rng = np.random.default_rng(1)
    X = rng.uniform(-4, 4, size=(60_000, 8)).astype(np.float32)
    X[:30_000, 3] = rng.integers(0, 5, size=30_000)
    label, score = _run(forest, X)
    assert label.dtype == np.int64 and score.dtype == np.float32
    assert label.shape == score.shape == (60_000,)
    np.testing.assert_array_equal(label, forest.predict(X))
    assert np.abs(score.astype(np.float64) - forest.decision_function(X)).max() <= 1e-6


@pytest.mark.parametrize("max_features", [0.5, 3])
def test_feature_subsets_map_through_estimators_features(train: np.ndarray, max_features: float) -> None:
    forest = IsolationForest(n_estimators=40, max_features=max_features, random_state=2).fit(train)
    assert any(len(f) < 8 for f in forest.estimators_features_)
    X = np.random.default_rng(3).uniform(-4, 4, size=(5000, 8)).astype(np.float32)
    label, score = _run(forest, X)
    np.testing.assert_array_equal(label, forest.predict(X))
    assert np.abs(score - forest.decision_function(X)).max() <= 1e-6


def test_auto_contamination_and_training_rows(train: np.ndarray) -> None:
    forest = IsolationForest(n_estimators=20, max_samples=64, random_state=4).fit(train)
    label, score = _run(forest, train)
    np.testing.assert_array_equal(label, forest.predict(train))
    assert np.abs(score - forest.decision_function(train)).max() <= 1e-6


def test_graph_is_a_handful_of_nodes_on_the_contract(train: np.ndarray) -> None:
    forest = IsolationForest(n_estimators=50, random_state=0).fit(train)
    model = to_onnx(forest).onnx
    check_contract(model)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("TreeEnsembleRegressor") == 1
    assert len(ops) <= 10
    assert {o.domain: o.version for o in model.opset_import} == OPSETS


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False, width=64, min_value=-1e30, max_value=1e30))
def test_floor_float32_preserves_the_comparison(t: float) -> None:
    t32 = floor_float32(np.array([t]))[0]
    assert t32.dtype == np.float32
    assert float(t32) <= t
    # the next float32 up is already above t: no float32 x lies in (t32, t]
    assert float(np.nextafter(t32, np.float32(np.inf))) > t


def test_missing_values_follow_sklearn(train: np.ndarray) -> None:
    forest = IsolationForest(n_estimators=30, random_state=5).fit(train)
    X = np.random.default_rng(6).uniform(-4, 4, size=(3000, 8)).astype(np.float32)
    X[::3, 2] = np.nan
    X[::7, 5] = np.nan
    label, score = _run(forest, X)
    np.testing.assert_array_equal(label, forest.predict(X))
    assert np.abs(score - forest.decision_function(X)).max() <= 1e-6


def test_missing_routed_without_flags_exactly_at_every_threshold(train: np.ndarray) -> None:
    """The graph compares negated features instead of flagging NaN (tree_layout): rows on
    each threshold, one float32 step either side, NaN and +-inf reach sklearn's leaves."""
    forest = IsolationForest(n_estimators=12, random_state=7).fit(train)
    model = to_onnx(forest).onnx
    trees = next(n for n in model.graph.node if n.op_type == "TreeEnsembleRegressor")
    flags = next(a for a in trees.attribute if a.name == "nodes_missing_value_tracks_true")
    assert not any(flags.ints)
    rng = np.random.default_rng(8)
    rows = []
    for est, feats in zip(forest.estimators_, forest.estimators_features_, strict=True):
        split = est.tree_.children_left != -1
        for f, t in zip(np.asarray(feats)[est.tree_.feature[split]], est.tree_.threshold[split], strict=True):
            t32 = floor_float32(np.array([t]))[0]
            for v in (t32, np.nextafter(t32, np.float32(np.inf)), np.nextafter(t32, np.float32(-np.inf))):
                row = rng.uniform(-4, 4, size=8).astype(np.float32)
                row[f] = v
                rows.append(row)
    X = np.array(rows, dtype=np.float32)
    X[::4, 1] = np.nan
    X[1::9, 6] = np.inf
    X[2::9, 0] = -np.inf
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    label, score = session.run(["label", "score"], {"input": X})
    np.testing.assert_array_equal(label, forest.predict(X))
    assert np.abs(score - forest.decision_function(X)).max() <= 1e-6


def test_negation_is_refused_where_it_would_not_be_exact() -> None:
    from packager.convert.tree_layout import route_missing_by_negation

    attrs = {
        "nodes_modes": ["BRANCH_LT", "LEAF", "LEAF"],
        "nodes_featureids": [0, 0, 0],
        "nodes_values": [0.5, 0.0, 0.0],
        "nodes_truenodeids": [1, 0, 0],
        "nodes_falsenodeids": [2, 0, 0],
        "nodes_missing_value_tracks_true": [1, 0, 0],
    }
    assert route_missing_by_negation(attrs, 1) is None
    attrs["nodes_modes"] = ["BRANCH_LEQ", "LEAF", "LEAF"]
    assert route_missing_by_negation(attrs, 0) is None  # feature 0 outside the input
    routed = route_missing_by_negation(attrs, 1)
    assert routed is not None
    assert routed["nodes_featureids"][0] == 1 and routed["nodes_truenodeids"][0] == 2
    assert np.float32(routed["nodes_values"][0]) == np.nextafter(np.float32(-0.5), np.float32(-np.inf))
