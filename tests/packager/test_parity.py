"""The parity gate: figures measured on a real run, refusals that say by how much."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from packager.convert import to_onnx
from packager.errors import ParityError
from packager.parity import DEFAULT_THRESHOLDS, Thresholds, check_parity, compare, measure, spearman
from tests.packager import trained


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, path)
    return path


def test_faithful_model_passes_fp32(tmp_path: Path) -> None:
    det = trained.iforest()
    path = _save(to_onnx(det).onnx, tmp_path / "m.onnx")
    result = measure(path, det, trained.holdout(), DEFAULT_THRESHOLDS["fp32"])
    check_parity(result, DEFAULT_THRESHOLDS["fp32"])
    p = result.parity
    assert p.rows == 1500 and p.label_agreement == 1.0 and p.max_abs_score_diff < 1e-6
    assert p.mean_abs_score_diff <= p.max_abs_score_diff and p.spearman > 0.99999


def test_tampered_offset_is_refused_with_the_amount(tmp_path: Path) -> None:
    det = trained.iforest()
    model = to_onnx(det).onnx
    offset = next(t for t in model.graph.initializer if t.name == "iforest_minus_offset")
    offset.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(offset) + np.float32(0.02), offset.name))
    path = _save(model, tmp_path / "tampered.onnx")
    result = measure(path, det, trained.holdout(), DEFAULT_THRESHOLDS["fp32"])
    with pytest.raises(
        ParityError, match=r"label agreement 0\.\d{4} < required 0\.9990 \(missed by 0\.\d{4}\)"
    ):
        check_parity(result, DEFAULT_THRESHOLDS["fp32"], "cpu fp32")


def test_perturbed_weights_miss_on_score(tmp_path: Path) -> None:
    det = trained.pca()
    model = to_onnx(det).onnx
    w = next(t for t in model.graph.initializer if t.name == "pca_back")
    rng = np.random.default_rng(0)
    arr = numpy_helper.to_array(w)
    w.CopyFrom(
        numpy_helper.from_array((arr * (1 + 1e-3 * rng.normal(size=arr.shape))).astype(np.float32), w.name)
    )
    result = measure(_save(model, tmp_path / "p.onnx"), det, trained.holdout(), DEFAULT_THRESHOLDS["fp32"])
    with pytest.raises(ParityError, match=r"max \|score diff\| .* > allowed .* \(missed by "):
        check_parity(result, Thresholds(0.0, 1e-5, 1e-5, 0.0))


def test_absurdly_strict_threshold_names_the_figure() -> None:
    ref_label = np.array([1, 1, -1, 1])
    ref_score = np.array([0.1, 0.2, -0.3, 0.4])
    result = compare(ref_label, ref_score, ref_label, ref_score + 1e-7, DEFAULT_THRESHOLDS["fp32"])
    check_parity(result, DEFAULT_THRESHOLDS["fp32"])
    with pytest.raises(ParityError, match=r"max \|score diff\| 1e-07 > allowed 0 \(missed by 1e-07\)"):
        check_parity(result, Thresholds(1.0, 0.0, 0.0, 1.0))
    shuffled = compare(ref_label, ref_score, ref_label, ref_score[::-1], Thresholds(0, 10, 0, 0))
    with pytest.raises(
        ParityError, match=r"Spearman rank correlation -0\.60000 < required 0\.99990 \(missed by 1\.59990\)"
    ):
        check_parity(shuffled, Thresholds(0.0, 10.0, 0.0, 0.9999))


def test_spearman_of_constants() -> None:
    assert spearman(np.ones(5), np.ones(5)) == 1.0
    assert spearman(np.ones(5), np.arange(5.0)) == 0.0


def test_ties_below_float32_resolution_do_not_count_as_disagreement() -> None:
    # A saturated classifier: reference scores differ only in the 9th decimal, the
    # artifact's float32 copies are off by an ulp and tie differently.
    rng = np.random.default_rng(0)
    ref = np.concatenate([1.0 - rng.uniform(0, 1e-8, 900), rng.uniform(-1, 1, 100)])
    got = (ref + rng.uniform(-1.2e-7, 1.2e-7, ref.size)).astype(np.float32)
    label = np.where(ref < 0, -1, 1)
    result = compare(label, ref, label, got, DEFAULT_THRESHOLDS["fp32"])
    assert result.parity.spearman > 0.9999
    check_parity(result, DEFAULT_THRESHOLDS["fp32"])


def test_a_real_reordering_still_misses_spearman() -> None:
    ref = np.linspace(-1, 1, 1000)
    got = ref.copy()
    got[::2] = got[::-2]  # swap large blocks of the ranking
    label = np.where(ref < 0, -1, 1)
    result = compare(label, ref, label, got.astype(np.float32), DEFAULT_THRESHOLDS["fp32"])
    assert result.parity.spearman < 0.9


def test_lightgbm_with_saturated_probabilities_passes_the_fp32_gate(tmp_path: Path) -> None:
    import lightgbm as lgb

    from packager.pipeline import build
    from packager.telemetry import generate_telemetry

    tel = generate_telemetry(4000, seed=1)
    X = tel.frame.to_numpy(np.float32)
    clf = lgb.LGBMClassifier(n_estimators=50, verbose=-1).fit(X, tel.labels)
    result = build(clf, targets=["cpu"], workdir=tmp_path, calibration=X[:1000])
    parity = result.artifacts[0].parity
    assert parity.label_agreement == 1.0
    assert parity.spearman >= DEFAULT_THRESHOLDS["fp32"].min_spearman
