"""The seed's detector API: sklearn conventions, save_model's files and ONNX metadata."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from packager.detectors import IsolationForestDetector, PCADetector, training_data_sha256
from packager.errors import UsageError
from packager.export import save_model
from packager.telemetry import FEATURES, generate_telemetry
from tests.packager import trained


def _meta(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(path).metadata_props}


def test_isolation_forest_follows_sklearn() -> None:
    det = trained.iforest()
    X = trained.holdout()
    np.testing.assert_array_equal(det.decision_function(X), det.model_.decision_function(X))
    np.testing.assert_allclose(det.score_samples(X) - det.model_.offset_, det.decision_function(X))
    np.testing.assert_array_equal(det.predict(X), np.where(det.decision_function(X) < 0, -1, 1))
    # it finds most injected anomalies in held-out telemetry
    t = generate_telemetry(1500, seed=11)
    assert np.mean(det.predict(t.frame)[t.is_anomaly] == -1) > 0.6


def test_isolation_forest_save_model(tmp_path: Path) -> None:
    det = trained.iforest()
    paths = save_model(det, tmp_path / "out" / "detector")
    assert set(paths) == {"sklearn", "onnx"}  # trees: nothing to quantize, no fake file
    assert paths["sklearn"].suffix == ".joblib" and paths["onnx"].suffix == ".onnx"
    meta = _meta(paths["onnx"])
    assert json.loads(meta["modelsync.feature_names"]) == list(FEATURES)
    assert meta["modelsync.family"] == "isolation_forest"
    assert float(meta["modelsync.threshold"]) == 0.0
    assert meta["modelsync.training_data_sha256"] == training_data_sha256(trained.telemetry().to_numpy())
    versions = json.loads(meta["modelsync.versions"])
    assert {"scikit-learn", "onnx", "onnxruntime"} <= set(versions)
    reloaded = joblib.load(paths["sklearn"])
    X = trained.holdout()
    np.testing.assert_array_equal(reloaded.predict(X), det.predict(X))
    session = ort.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    label, _ = session.run(["label", "score"], {"input": X})
    np.testing.assert_array_equal(label, det.predict(X))


@pytest.mark.parametrize("which", ["autoencoder", "pca"])
def test_reconstruction_detectors(which: str, tmp_path: Path) -> None:
    det = getattr(trained, which)()
    train = trained.telemetry()
    flagged = np.mean(det.predict(train) == -1)
    assert 0.03 <= flagged <= 0.07  # threshold from the 5% contamination quantile
    X = trained.holdout()
    np.testing.assert_allclose(det.decision_function(X), det.threshold_ - det.reconstruction_error(X))
    paths = save_model(det, tmp_path / f"{which}.v2")
    assert set(paths) == {"sklearn", "onnx", "onnx_quantized"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"{which}.v2.int8.onnx",
        f"{which}.v2.joblib",
        f"{which}.v2.onnx",
    ]
    q = ort.InferenceSession(str(paths["onnx_quantized"]), providers=["CPUExecutionProvider"])
    assert "MatMulInteger" in {n.op_type for n in onnx.load(paths["onnx_quantized"]).graph.node}
    label, _score = q.run(["label", "score"], {"input": X})
    assert np.mean(label == det.predict(X)) > 0.95
    assert _meta(paths["onnx"])["modelsync.family"] == which


def test_column_checks() -> None:
    det = trained.iforest()
    with pytest.raises(UsageError, match="differ from the trained features"):
        det.predict(trained.telemetry().iloc[:, ::-1])
    with pytest.raises(UsageError, match="5 features given, the model expects 12"):
        det.predict(np.zeros((3, 5)))
    with pytest.raises(UsageError, match="contamination"):
        PCADetector(contamination=0.7).fit(trained.telemetry())
    arr = IsolationForestDetector(n_estimators=5).fit(
        np.zeros((20, 3)) + np.arange(3), feature_names=["a", "b", "c"]
    )
    assert arr.feature_names_ == ["a", "b", "c"]
