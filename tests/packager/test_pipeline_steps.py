"""Pipeline steps that cannot fold: ONNX nodes before the detector's own converter, gated
like any float32 arithmetic; and the pipelines that are refused, each in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.covariance import EllipticEnvelope
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, PolynomialFeatures, StandardScaler

from packager.cli import main
from packager.convert import to_onnx
from packager.errors import UnsupportedModelError, UsageError
from packager.pipeline import build


def _data(name: str) -> np.ndarray:
    loader = {"breast_cancer": load_breast_cancer, "wine": load_wine, "diabetes": load_diabetes}[name]
    return loader().data.astype(np.float32).astype(np.float64)


def _forest() -> IsolationForest:
    return IsolationForest(n_estimators=15, random_state=0)


def _agreement(pipe: Any, rows: np.ndarray) -> tuple[onnx.ModelProto, float, float]:
    conv = to_onnx(pipe)
    session = ort.InferenceSession(conv.onnx.SerializeToString(), providers=["CPUExecutionProvider"])
    x = rows.astype(np.float32)
    label, score = session.run(["label", "score"], {"input": x})
    ref_label, ref_score = conv.reference.predict(x), conv.reference.decision_function(x)
    return conv.onnx, float(np.mean(label == ref_label)), float(np.abs(score - ref_score).max())


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _noisy(X: np.ndarray, n: int = 3000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = X[rng.integers(0, len(X), n)]
    return np.vstack([X, base + rng.normal(0, 0.05, base.shape) * X.std(axis=0)])


def test_scaler_and_pca_become_nodes_in_front_of_one_tree_ensemble() -> None:
    X = _data("breast_cancer")
    pipe = make_pipeline(StandardScaler(), PCA(n_components=6, whiten=True), _forest()).fit(X)
    model, agreement, diff = _agreement(pipe, _noisy(X))
    ops = _ops(model)
    assert ops.count("TreeEnsembleRegressor") == 1 and "MatMul" in ops and len(ops) < 15
    assert agreement >= 0.995 and diff < 1e-4


@pytest.mark.filterwarnings("ignore:Skipping features without any observed values")
def test_imputer_fills_nan_as_sklearn() -> None:
    X = _data("wine")
    rng = np.random.default_rng(1)
    holes = X.copy()
    holes[rng.random(X.shape) < 0.1] = np.nan
    holes[:, 4] = np.nan  # all-missing in training: scikit-learn drops the column
    for strategy in ("mean", "median"):
        pipe = make_pipeline(SimpleImputer(strategy=strategy), StandardScaler(), _forest()).fit(holes)
        model, agreement, diff = _agreement(pipe, holes)
        assert "IsNaN" in _ops(model)
        assert agreement >= 0.995 and diff < 1e-4


@pytest.mark.parametrize("func", [np.log1p, np.sqrt, np.abs])
def test_function_transformer_of_a_numpy_ufunc(func: Any) -> None:
    X = _data("breast_cancer")
    pipe = make_pipeline(FunctionTransformer(func), StandardScaler(), _forest()).fit(X)
    _, agreement, diff = _agreement(pipe, np.abs(_noisy(X)))
    assert agreement >= 0.995 and diff < 1e-4


def test_column_transformer_with_a_transform_becomes_nodes() -> None:
    X = _data("diabetes")
    ct = ColumnTransformer([("log", FunctionTransformer(np.abs), [0, 3]), ("s", StandardScaler(), [2, 5])])
    pipe = make_pipeline(ct, _forest()).fit(X)
    model, agreement, diff = _agreement(pipe, _noisy(X))
    assert {"Gather", "Concat", "Abs"} <= set(_ops(model))
    assert agreement >= 0.995 and diff < 1e-4


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(
    "detector",
    [
        EllipticEnvelope(contamination=0.05, random_state=0),
        LogisticRegression(max_iter=500),
        MLPClassifier(hidden_layer_sizes=(8,), max_iter=400, random_state=0),
    ],
)
def test_scaler_in_front_of_covariance_linear_and_neural_detectors(detector: Any) -> None:
    X = _data("breast_cancer")
    y = load_breast_cancer().target
    pipe = make_pipeline(StandardScaler(), MinMaxScaler(), detector)
    pipe.fit(X, y) if hasattr(detector, "predict_proba") else pipe.fit(X)
    model, agreement, _ = _agreement(pipe, _noisy(X))
    assert "TreeEnsembleRegressor" not in _ops(model)
    assert agreement >= 0.995


def test_pipeline_build_is_gated_and_uses_the_one_tree_converter(tmp_path: Path) -> None:
    X = _data("wine")
    pipe = make_pipeline(StandardScaler(), PCA(n_components=5), _forest()).fit(X)
    result = build(pipe, targets=["cpu"], workdir=tmp_path, calibration=X)
    (art,) = result.artifacts
    # the PCA's weights make an INT8 variant; it passed its own (INT8) gate
    assert art.precision in ("int8", "fp32") and art.parity.label_agreement >= 0.95
    assert result.card.family == "isolation_forest" and result.reference.pipeline is pipe


@pytest.mark.parametrize(
    ("model", "error", "message"),
    [
        (
            make_pipeline(PolynomialFeatures(), _forest()),
            UnsupportedModelError,
            r"Pipeline step 'polynomialfeatures' \(PolynomialFeatures\) is not supported: fold it",
        ),
        (
            make_pipeline(FunctionTransformer(lambda x: x * 2), _forest()),
            UnsupportedModelError,
            r"\(FunctionTransformer\) \(func=<lambda>\) is not supported",
        ),
        (
            make_pipeline(StandardScaler(), LinearRegression()),
            UnsupportedModelError,
            r"Pipeline's last step 'linearregression' \(LinearRegression\) is not a detector",
        ),
    ],
)
def test_refused_pipelines_name_the_step(model: Any, error: type[Exception], message: str) -> None:
    X = _data("wine")
    model.fit(X, X[:, 0])
    with pytest.raises(error, match=message):
        to_onnx(model)


def test_unfitted_pipeline_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"Pipeline is not fitted .*'isolationforest'"):
        to_onnx(make_pipeline(StandardScaler(), _forest()))


def _cli(model_path: Path, out: Path, keys_dir: Path, *extra: str) -> list[str]:
    return [
        "package", str(model_path), "--name", "pipe", "--version", "1", "-o", str(out),
        "--key", str(keys_dir / "publisher.key"), "--target", "cpu", *extra,
    ]  # fmt: skip


def test_cli_refuses_an_unsupported_step_in_one_line(
    tmp_path: Path, keys_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    X = _data("wine")
    path = tmp_path / "model.joblib"
    joblib.dump(make_pipeline(PolynomialFeatures(), _forest()).fit(X), path)
    assert main(_cli(path, tmp_path / "bundle", keys_dir)) == 2
    err = capsys.readouterr().err.strip()
    assert "Pipeline step 'polynomialfeatures' (PolynomialFeatures) is not supported" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "bundle").exists()


def test_cli_packages_a_folded_pipeline(tmp_path: Path, keys_dir: Path) -> None:
    X = _data("breast_cancer")
    path, cal = tmp_path / "model.joblib", tmp_path / "cal.npy"
    joblib.dump(make_pipeline(StandardScaler(), _forest()).fit(X), path)
    np.save(cal, X)
    assert main(_cli(path, tmp_path / "bundle", keys_dir, "--calibration", str(cal))) == 0
    assert (tmp_path / "bundle" / "manifest.json").exists()
