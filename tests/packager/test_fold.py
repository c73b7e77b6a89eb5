"""Preprocessing folded into the trees: one tree operator, and exactly the pipeline's answers
at every folded boundary (float32 neighbours on both sides of each threshold)."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from lightgbm import LGBMClassifier
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    IsolationForest,
    RandomForestClassifier,
)
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

from packager.convert import to_onnx
from packager.convert.fold import fold_thresholds

ULPS = 3


@cache
def dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    loader = {
        "breast_cancer": load_breast_cancer,
        "wine": load_wine,
        "diabetes": load_diabetes,
        "digits": load_digits,
    }
    X, y = loader[name](return_X_y=True)
    # float32 values, held as float64: the rows a device sends, as the pipeline was trained
    return X.astype(np.float32).astype(np.float64), y


def _forest(**kw: Any) -> IsolationForest:
    return IsolationForest(n_estimators=kw.pop("n_estimators", 15), random_state=0, **kw)


def _trees(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type.startswith("TreeEnsemble")]


def _attrs(node: onnx.NodeProto) -> dict[str, np.ndarray]:
    out = {}
    for a in node.attribute:
        if a.ints:
            out[a.name] = np.asarray(a.ints)
        elif a.floats:
            out[a.name] = np.asarray(a.floats, dtype=np.float32)
        elif a.strings:
            out[a.name] = np.array([s.decode() for s in a.strings])
    return out


def boundary_rows(model: onnx.ModelProto, base: np.ndarray, ulps: int = ULPS) -> np.ndarray:
    """For every branch node: a row inside the node's box (so the row reaches it) with the
    node's feature set to each float32 within ``ulps`` steps of its threshold."""
    rows = []
    for node in _trees(model):
        a = _attrs(node)
        index = {
            (t, n): i for i, (t, n) in enumerate(zip(a["nodes_treeids"], a["nodes_nodeids"], strict=True))
        }
        roots = [i for i, n in enumerate(a["nodes_nodeids"]) if n == 0]
        stack = [
            (i, np.full(base.shape[1], -np.inf, np.float32), np.full(base.shape[1], np.inf, np.float32))
            for i in roots
        ]
        k = 0
        while stack:
            i, low, high = stack.pop()
            if a["nodes_modes"][i] == "LEAF":
                continue
            f, v, mode = int(a["nodes_featureids"][i]), a["nodes_values"][i], a["nodes_modes"][i]
            if f >= base.shape[1]:  # a column of concat(x, -x): -x <= v  <=>  x >= -v
                f, v, mode = f - base.shape[1], -v, "BRANCH_GTE"
            row = np.clip(base[k % len(base)].astype(np.float32), low, high)
            k += 1
            for step in range(-ulps, ulps + 1):
                x = v
                for _ in range(abs(step)):
                    x = np.nextafter(x, np.float32(np.inf if step > 0 else -np.inf))
                if np.isfinite(x) and low[f] <= x <= high[f]:
                    r = row.copy()
                    r[f] = x
                    rows.append(r)
            t = a["nodes_treeids"][i]
            yes = index[(t, a["nodes_truenodeids"][i])]
            no = index[(t, a["nodes_falsenodeids"][i])]
            below = np.nextafter(v, np.float32(-np.inf))
            above = np.nextafter(v, np.float32(np.inf))
            lo_yes, hi_yes, lo_no, hi_no = low.copy(), high.copy(), low.copy(), high.copy()
            if mode == "BRANCH_LEQ":
                hi_yes[f], lo_no[f] = min(hi_yes[f], v), max(lo_no[f], above)
            elif mode == "BRANCH_GTE":
                lo_yes[f], hi_no[f] = max(lo_yes[f], v), min(hi_no[f], below)
            else:
                raise AssertionError(f"unexpected mode {mode}")
            for child, lo_c, hi_c in ((yes, lo_yes, hi_yes), (no, lo_no, hi_no)):
                if (lo_c <= hi_c).all():
                    stack.append((child, lo_c, hi_c))
    return np.asarray(rows, dtype=np.float32)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def check_exact(pipe: Any, X: np.ndarray) -> int:
    """Convert, check one folded tree operator, walk every boundary; returns rows checked."""
    conv = to_onnx(pipe)
    assert len(_trees(conv.onnx)) == 1
    assert conv.onnx.graph.input[0].type.tensor_type.shape.dim[1].dim_value == X.shape[1]
    rows = np.vstack([boundary_rows(conv.onnx, X), X.astype(np.float32)])
    label, score = _session(conv.onnx).run(["label", "score"], {"input": rows})
    frame: Any = (
        pd.DataFrame(rows, columns=conv.reference.feature_names_in_)
        if isinstance(getattr(conv.reference, "feature_names_in_", None), np.ndarray)
        else rows
    )
    ref_label = conv.reference.predict(frame)
    ref_score = conv.reference.decision_function(frame)
    np.testing.assert_array_equal(label, ref_label)
    assert np.abs(score - ref_score).max() <= 1e-6
    return len(rows)


@pytest.mark.parametrize(
    ("data", "steps"),
    [
        ("breast_cancer", [StandardScaler()]),
        ("wine", [MinMaxScaler(feature_range=(-2, 3), clip=True), MaxAbsScaler()]),
        ("diabetes", [RobustScaler(with_centering=False), StandardScaler(with_mean=False)]),
        ("digits", [StandardScaler()]),  # zero-variance pixels: scikit-learn's scale 1
        ("wine", [RobustScaler(quantile_range=(10, 90), unit_variance=True)]),
    ],
)
def test_scalers_fold_exactly_into_isolation_forest(data: str, steps: list[Any]) -> None:
    X, _ = dataset(data)
    pipe = make_pipeline(*steps, _forest(max_features=0.7)).fit(X)
    assert check_exact(pipe, X) > 1000


def test_column_transformer_selects_reorders_duplicates_and_drops() -> None:
    X, _ = dataset("diabetes")
    ct = ColumnTransformer(
        [("s", StandardScaler(), [5, 2, 9]), ("p", "passthrough", [0]), ("r", RobustScaler(), [2])],
        remainder="drop",
    )
    pipe = make_pipeline(ct, MinMaxScaler(), _forest()).fit(X)
    check_exact(pipe, X)
    feats = _attrs(_trees(to_onnx(pipe).onnx)[0])["nodes_featureids"]
    # (a tree reading concat(x, -x) numbers the negated columns from X.shape[1] on)
    assert set((feats % X.shape[1]).tolist()) <= {0, 2, 5, 9}


def test_dataframe_columns_by_name_and_scaled_remainder() -> None:
    X, _ = dataset("wine")
    names = [f"c{i}" for i in range(X.shape[1])]
    frame = pd.DataFrame(X, columns=names)
    ct = ColumnTransformer([("m", MinMaxScaler(), ["c4", "c0"])], remainder=StandardScaler())
    pipe = make_pipeline(ct, _forest()).fit(frame)
    conv = to_onnx(pipe)
    assert conv.feature_names == names
    check_exact(pipe, X)


@pytest.mark.parametrize(
    ("data", "classifier"),
    [
        ("breast_cancer", RandomForestClassifier(n_estimators=8, random_state=0)),
        ("wine", ExtraTreesClassifier(n_estimators=8, random_state=0)),
        ("breast_cancer", GradientBoostingClassifier(n_estimators=10, random_state=0)),
    ],
)
def test_scalers_fold_into_sklearn_tree_classifiers(data: str, classifier: Any) -> None:
    X, y = dataset(data)
    pipe = make_pipeline(StandardScaler(), MinMaxScaler(), classifier).fit(X, (y == 0).astype(int))
    check_exact(pipe, X)


def test_lightgbm_in_a_pipeline_is_one_tree_operator() -> None:
    X, y = dataset("breast_cancer")
    model = LGBMClassifier(n_estimators=20, num_leaves=8, verbose=-1, random_state=0)
    pipe = make_pipeline(StandardScaler(), model).fit(X, y)
    conv = to_onnx(pipe)
    assert len(_trees(conv.onnx)) == 1
    rows = np.vstack([boundary_rows(conv.onnx, X), X.astype(np.float32)])
    label, score = _session(conv.onnx).run(["label", "score"], {"input": rows})
    # LightGBM compares float64 values to float64 thresholds; the converted model (bare
    # or folded) compares float32 ones, so a row within a float32 step of a threshold may
    # go the other way: a few such rows, no more.
    assert np.mean(label == conv.reference.predict(rows)) >= 0.995
    bulk = slice(len(rows) - len(X), None)
    np.testing.assert_array_equal(label[bulk], conv.reference.predict(rows[bulk]))
    assert np.abs(score[bulk] - conv.reference.decision_function(rows[bulk])).max() <= 1e-6


def test_bisection_handles_falling_maps_and_empty_or_full_sets() -> None:
    def falling(c: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        return {j: np.clip(5.0 - 2.0 * x, -10.0, 10.0) for j, x in c.items()}

    values = np.array([1.0, 1.0, -20.0, 20.0], dtype=np.float32)
    modes = np.array(["BRANCH_LEQ", "BRANCH_GT", "BRANCH_LEQ", "BRANCH_LEQ"])
    cols, signs = np.zeros(4, dtype=np.int64), np.ones(4, dtype=np.int64)
    new, down = fold_thresholds(cols, signs, values, modes, falling)
    # 5 - 2x <= 1 <=> x >= 2;  5 - 2x > 1 <=> x < 2;  never;  always
    assert down.tolist() == [False, True, False, False]
    assert new[0] == 2.0 and new[1] == np.nextafter(np.float32(2.0), np.float32(0))
    assert new[2] == np.inf and new[3] == -np.finfo(np.float32).max
    # the same questions of the negated value: -(5 - 2x) <= 1 <=> x <= 3
    new, down = fold_thresholds(cols[:1], -signs[:1], values[:1], modes[:1], falling)
    assert down.tolist() == [True] and new[0] == 3.0


def test_pipeline_without_steps_and_passthrough_steps() -> None:
    X, _ = dataset("wine")
    pipe = Pipeline([("nothing", "passthrough"), ("scale", StandardScaler()), ("forest", _forest())]).fit(X)
    check_exact(pipe, X)


def test_falling_scale_folds_into_greater_or_equal_questions() -> None:
    # scikit-learn's own scalers always scale up; a flipped one (a sign convention set by
    # hand) makes every question about that feature face the other way
    X, _ = dataset("wine")
    scaler = StandardScaler().fit(X)
    scaler.scale_ = np.where(np.arange(X.shape[1]) % 2 == 0, -scaler.scale_, scaler.scale_)
    pipe = make_pipeline(scaler, _forest())
    pipe.steps[-1][1].fit(scaler.transform(X))
    check_exact(pipe, X)
    a = _attrs(_trees(to_onnx(pipe).onnx)[0])
    # x >= x* is BRANCH_GTE, or BRANCH_LEQ on the negated copy where the trees read concat(x, -x)
    up = (a["nodes_modes"] == "BRANCH_GTE") | (a["nodes_featureids"] >= X.shape[1])
    assert up.any() and (a["nodes_modes"] != "BRANCH_GTE").any()


def test_missing_values_take_the_same_branch_after_folding() -> None:
    X, _ = dataset("breast_cancer")
    ct = ColumnTransformer([("s", StandardScaler(), list(range(0, 30, 2)))], remainder=MinMaxScaler())
    pipe = make_pipeline(ct, _forest()).fit(X)
    rng = np.random.default_rng(2)
    rows = X[rng.integers(0, len(X), 2000)].astype(np.float32)
    rows[rng.random(rows.shape) < 0.2] = np.nan
    conv = to_onnx(pipe)
    label, score = _session(conv.onnx).run(["label", "score"], {"input": rows})
    np.testing.assert_array_equal(label, conv.reference.predict(rows))
    assert np.abs(score - conv.reference.decision_function(rows)).max() <= 1e-6
