"""Every family through its converter, run in onnxruntime, against its reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from lightgbm import LGBMClassifier
from sklearn.covariance import EllipticEnvelope
from sklearn.ensemble import IsolationForest, RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler
from sklearn.svm import OneClassSVM

from packager.convert import to_onnx
from packager.convert.outputs import OPSETS, check_contract
from packager.detectors import AutoencoderDetector, ClassifierDetector
from packager.errors import UnsupportedModelError, UsageError
from tests.packager import trained


def _parity(model: Any) -> tuple[Any, float, float]:
    """(reference, label agreement, max |score diff| relative to the score scale)."""
    converted = to_onnx(model)
    check_contract(converted.onnx)
    assert {o.domain: o.version for o in converted.onnx.opset_import} == OPSETS
    session = ort.InferenceSession(converted.onnx.SerializeToString(), providers=["CPUExecutionProvider"])
    X = trained.holdout().astype(np.float32)
    label, score = session.run(["label", "score"], {"input": X})
    ref = converted.reference
    ref_score = ref.decision_function(X)
    assert label.dtype == np.int64 and score.dtype == np.float32 and score.shape == (X.shape[0],)
    np.testing.assert_array_equal(label, np.where(score < 0, -1, 1))
    scale = max(1.0, float(np.abs(ref_score).max()))
    return ref, float(np.mean(label == ref.predict(X))), float(np.abs(score - ref_score).max() / scale)


def test_autoencoder() -> None:
    _, agreement, diff = _parity(trained.autoencoder())
    assert agreement == 1.0 and diff < 1e-5


@pytest.mark.parametrize("activation", ["tanh", "logistic", "identity"])
def test_autoencoder_activations(activation: str) -> None:
    det = AutoencoderDetector(hidden_layer_sizes=(6,), activation=activation, max_iter=40)
    _, agreement, diff = _parity(det.fit(trained.telemetry()))
    assert agreement == 1.0 and diff < 1e-5


def test_pca() -> None:
    _, agreement, diff = _parity(trained.pca())
    assert agreement == 1.0 and diff < 1e-5


def test_lightgbm_failure_classifier() -> None:
    X, y = trained.telemetry().to_numpy(), np.where(trained.labels() == 1, -1, 1)
    model = LGBMClassifier(n_estimators=30, num_leaves=8, verbose=-1, random_state=0).fit(X, y)
    ref, agreement, diff = _parity(model)
    assert isinstance(ref, ClassifierDetector) and ref.family == "lightgbm" and ref.failure_class == -1
    assert agreement == 1.0 and diff < 1e-5
    # negative score exactly where LightGBM predicts the failure class
    holdout = trained.holdout()
    np.testing.assert_array_equal(ref.predict(holdout) == -1, model.predict(holdout) == -1)


@pytest.mark.parametrize("failure", [0, 1])
def test_lightgbm_binary_is_one_regressor_on_the_margin(failure: int) -> None:
    """Binary LightGBM: TreeEnsembleRegressor on the half margin and a Tanh (no classifier,
    no Gathers); scores match predict_proba's P(other) - P(failure), NaN rows included."""
    X = trained.telemetry().to_numpy()
    # -1 is read as the failure class (index 0 of [-1, 1]); of [0, 1] it is 1
    y = np.where(trained.labels() == 1, -1, 1) if failure == 0 else trained.labels()
    X_nan = X.copy()
    X_nan[::5, 2] = np.nan  # LightGBM learns a default direction for missing values
    model = LGBMClassifier(n_estimators=30, num_leaves=8, verbose=-1, random_state=0).fit(X_nan, y)
    converted = to_onnx(model)
    ops = [n.op_type for n in converted.onnx.graph.node]
    assert "TreeEnsembleClassifier" not in ops and ops.count("TreeEnsembleRegressor") == 1 and "Tanh" in ops
    ref = converted.reference
    assert ref.failure_index == failure
    rows = trained.holdout().astype(np.float32)
    rows[::3, 2] = np.nan
    session = ort.InferenceSession(converted.onnx.SerializeToString(), providers=["CPUExecutionProvider"])
    label, score = session.run(["label", "score"], {"input": rows})
    np.testing.assert_array_equal(label, ref.predict(rows))
    assert np.abs(score - ref.decision_function(rows)).max() < 1e-6


def test_generic_outlier_detector() -> None:
    model = LocalOutlierFactor(n_neighbors=20, novelty=True).fit(trained.telemetry().to_numpy())
    ref, agreement, diff = _parity(model)
    assert ref is model and agreement == 1.0 and diff < 1e-5


def test_elliptic_envelope_has_its_own_converter() -> None:
    model = EllipticEnvelope(contamination=0.05, random_state=0).fit(trained.telemetry().to_numpy())
    ref, agreement, diff = _parity(model)
    assert ref is model and agreement == 1.0 and diff < 1e-5
    assert len(to_onnx(model).onnx.graph.node) <= 10


def test_generic_pipeline() -> None:
    model = make_pipeline(StandardScaler(), OneClassSVM(nu=0.05)).fit(trained.telemetry().to_numpy())
    ref, agreement, diff = _parity(model)
    assert ref.pipeline is model and agreement == 1.0 and diff < 1e-5


def test_generic_classifier_pipeline_with_failure_class_1() -> None:
    X = trained.telemetry().to_numpy()
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, trained.labels())
    ref, agreement, diff = _parity(model)
    assert ref.failure_class == 1
    assert agreement == 1.0 and diff < 1e-5
    # the reference runs the pipeline on float64 copies of the rows
    expected = 1 - 2 * model.predict_proba(X.astype(np.float64))[:, 1]
    np.testing.assert_allclose(ref.decision_function(X), expected, atol=1e-12)


def test_multiclass_failure_class_must_be_named() -> None:
    X = trained.telemetry().to_numpy()
    y = np.array(["ok", "warn", "broken"])[np.arange(len(X)) % 3]
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    with pytest.raises(UnsupportedModelError, match="failure class"):
        to_onnx(model)
    _ref, agreement, _ = _parity(ClassifierDetector(model, failure_class="broken"))
    assert agreement >= 0.999


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (LinearRegression(), "neither an outlier detector"),
        (
            make_pipeline(PolynomialFeatures(), IsolationForest(n_estimators=5, random_state=0)),
            r"Pipeline step 'polynomialfeatures' \(PolynomialFeatures\) is not supported",
        ),
        ("not a model", "not a scikit-learn or LightGBM model"),
    ],
)
def test_unsupported_models_are_refused_by_name(model: Any, message: str) -> None:
    if hasattr(model, "fit"):
        X = trained.telemetry().to_numpy()
        model.fit(X, X[:, 0]) if isinstance(model, LinearRegression) else model.fit(X)
    with pytest.raises(UnsupportedModelError, match=message):
        to_onnx(model)


def test_unfitted_model_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="not fitted"):
        to_onnx(OneClassSVM())


def test_feature_names_must_match_the_model() -> None:
    with pytest.raises(UsageError, match="feature names"):
        to_onnx(trained.iforest(), feature_names=["a", "b"])
