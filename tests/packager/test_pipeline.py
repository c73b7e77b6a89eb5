"""build(): the interface the bundle uses, its inputs checked before any work is done."""

from __future__ import annotations

import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.svm import OneClassSVM
from sklearn.tree import DecisionTreeClassifier

from packager.errors import UnsupportedModelError, UsageError
from packager.manifest import TARGETS
from packager.pipeline import build, load_model, rows_from_ranges
from packager.runtime import run_artifact
from packager.telemetry import FEATURES
from tests.packager import trained


def test_build_all_targets(tmp_path: Path) -> None:
    det = trained.iforest()
    said: list[str] = []
    result = build(det, targets=list(TARGETS), workdir=tmp_path, progress=said.append)
    assert [a.target for a in result.artifacts] == list(TARGETS)
    assert said[0] == "converting to ONNX" and any("done" in s for s in said)
    card = result.card
    assert card.family == "isolation_forest" and card.framework == "scikit-learn"
    assert [f.name for f in card.features] == list(FEATURES)
    assert card.input.name == "input" and card.input.shape == [None, 12]
    assert [(o.name, o.dtype) for o in card.outputs] == [("label", "int64"), ("score", "float32")]
    assert card.threshold == 0.0 and card.training_data_sha256 == det.training_data_sha256_
    assert result.onnx_fp32.exists() and result.reference is det
    X = trained.holdout()
    ref_label, ref_score = result.reference_outputs(X)
    for art in result.artifacts:
        label, score = run_artifact(art.path, X)
        np.testing.assert_array_equal(label, ref_label)
        assert np.abs(score - ref_score).max() <= 1e-6
        assert art.parity.label_agreement == 1.0 and art.parity.max_abs_score_diff <= 1e-6


def test_parity_rows_drawn_from_calibration_ranges() -> None:
    calib = trained.telemetry().to_numpy()
    rows = rows_from_ranges(calib.min(0), calib.max(0), calib, 1000)
    assert rows.shape == (1000, 12) and rows.dtype == np.float32
    assert (rows[:500] >= calib.min(0)).all() and (rows[:500] <= calib.max(0)).all()


def test_feature_count_mismatch_is_a_usage_error(tmp_path: Path) -> None:
    det = trained.iforest()
    with pytest.raises(UsageError, match="calibration data has 5 features, the model expects 12"):
        build(det, targets=["cpu"], workdir=tmp_path, calibration=np.zeros((10, 5)))
    with pytest.raises(UsageError, match="parity rows has 13 features, the model expects 12"):
        build(det, targets=["cpu"], workdir=tmp_path, parity_rows=np.zeros((10, 13)))


def test_bad_targets_and_missing_rows(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown target"):
        build(trained.iforest(), targets=["tpu"], workdir=tmp_path)
    svm = OneClassSVM().fit(trained.telemetry().to_numpy())
    with pytest.raises(UsageError, match=r"OneClassSVM: its fitted statistics do not bound .* --calibration"):
        build(svm, targets=["cpu"], workdir=tmp_path)


def test_unsupported_estimator(tmp_path: Path) -> None:
    X = trained.telemetry().to_numpy()
    with pytest.raises(UnsupportedModelError, match="only LightGBM classifiers"):
        from lightgbm import LGBMRegressor

        build(LGBMRegressor(n_estimators=2, verbose=-1).fit(X, X[:, 0]), targets=["cpu"], workdir=tmp_path)
    tree = DecisionTreeClassifier(max_depth=3).fit(X, np.arange(len(X)) % 3 + 5)
    with pytest.raises(UnsupportedModelError, match=r"which of the classes \[5, 6, 7\] is the failure class"):
        build(tree, targets=["cpu"], workdir=tmp_path, parity_rows=X)


def test_load_model_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="model file not found"):
        load_model(tmp_path / "absent.joblib")
    with pytest.raises(UsageError, match="not a file"):
        load_model(tmp_path)
    corrupt = tmp_path / "corrupt.joblib"
    corrupt.write_bytes(b"\x80\x04this is not a pickle")
    with pytest.raises(UsageError, match="cannot read model file"):
        load_model(corrupt)
    data = tmp_path / "dict.pkl"
    data.write_bytes(pickle.dumps({"weights": [1, 2]}))
    with pytest.raises(UnsupportedModelError, match="holds a dict, not a model"):
        load_model(data)
    good = tmp_path / "model.joblib"
    joblib.dump(trained.iforest(), good)
    loaded = load_model(good)
    X = trained.holdout()
    np.testing.assert_array_equal(loaded.decision_function(X), trained.iforest().decision_function(X))


def test_models_fitted_on_dataframes_keep_their_names(tmp_path: Path) -> None:
    from sklearn.ensemble import IsolationForest

    frame = trained.telemetry()
    forest = IsolationForest(n_estimators=10, random_state=0).fit(frame)
    result = build(forest, targets=["cpu"], workdir=tmp_path, calibration=frame.to_numpy())
    assert [f.name for f in result.card.features] == list(FEATURES)
    assert result.artifacts[0].parity.label_agreement == 1.0
