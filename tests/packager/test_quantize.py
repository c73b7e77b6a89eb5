"""INT8/FP16 variants: applied and gated where there are weights, refused where there are none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from packager.convert import to_onnx
from packager.detectors import AutoencoderDetector
from packager.errors import PackagingError, ParityError
from packager.parity import DEFAULT_THRESHOLDS, Thresholds, check_parity, compare, reference_outputs
from packager.pipeline import DEFAULT_PARITY_ROWS, build, rows_from_ranges
from packager.quantize import TREE_REASON, check_calibration, quantizable
from tests.packager import trained
from tests.packager.saturating import exact_scores, saturating_scores

# A reduced-precision artifact in these tests must use at most this share of its gate's
# score-error budget: far enough from the edge that last-bit differences between CPUs and
# library versions cannot move it across.
MARGIN = 0.6

ALL = ["android-nnapi", "ios-coreml", "cpu"]
EXPECTED = {
    "cpu": ("int8", "dynamic", {"DynamicQuantizeLinear", "MatMulInteger"}),
    "android-nnapi": ("int8", "qdq-static", {"QuantizeLinear", "DequantizeLinear"}),
    "ios-coreml": ("fp16", "float16", {"Cast"}),
}


@pytest.mark.parametrize("which", ["autoencoder", "pca"])
def test_each_target_gets_its_gated_reduced_precision(which: str, tmp_path: Path) -> None:
    model: Any = getattr(trained, which)()
    calib = trained.telemetry().to_numpy()
    result = build(model, targets=ALL, workdir=tmp_path, calibration=calib)
    rows = _parity_rows(calib)
    _, ref_score = reference_outputs(model, rows)
    for art in result.artifacts:
        precision, method, ops = EXPECTED[art.target]
        assert art.precision == precision, f"{art.target}: {art.quantization.reason}"
        allowed = DEFAULT_THRESHOLDS[precision].allowed_score_diff(ref_score)
        used = art.parity.max_abs_score_diff / allowed
        assert used <= MARGIN, (
            f"{which} {art.target} {precision}: max |score error| {art.parity.max_abs_score_diff:.3g} "
            f"uses {used:.0%} of the gate's {allowed:.3g} (test models keep under {MARGIN:.0%})"
        )
        assert art.quantization.applied and art.quantization.method == method
        variant = onnx.load(tmp_path / f"model.{art.target}.{precision}.onnx")
        assert ops <= {n.op_type for n in variant.graph.node}
        # the gate ran on the shipped file and its figures are the ones recorded
        assert art.parity.rows == 2000 and art.parity.label_agreement >= 0.95
        assert art.parity.spearman >= 0.95
        assert art.path.suffix == ".ort" and art.path.exists()
    half = onnx.load(tmp_path / "model.ios-coreml.fp16.onnx")
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in half.graph.initializer)
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [o.type.tensor_type.elem_type for o in half.graph.output] == [
        onnx.TensorProto.INT64,
        onnx.TensorProto.FLOAT,
    ]


def _parity_rows(calib: np.ndarray) -> np.ndarray:
    """The rows build() measures parity on when given only calibration rows."""
    c = np.asarray(calib, dtype=np.float32)
    return rows_from_ranges(c.min(axis=0), c.max(axis=0), c, DEFAULT_PARITY_ROWS)


@pytest.mark.parametrize("which", ["autoencoder", "pca"])
def test_cpu_int8_scores_alike_on_saturating_and_exact_kernels(which: str, tmp_path: Path) -> None:
    """The cpu INT8 file must not depend on whether the CPU has VNNI (packager.quantize):
    onnxruntime here and a saturating u8s8 evaluation give the same scores, and those
    pass the same gate with the same margin."""
    model: Any = getattr(trained, which)()
    calib = trained.telemetry().to_numpy()
    result = build(model, targets=["cpu"], workdir=tmp_path, calibration=calib)
    (art,) = result.artifacts
    assert art.precision == "int8", art.quantization.reason
    rows = _parity_rows(calib)
    ref_label, ref_score = reference_outputs(model, rows)
    saturated = saturating_scores(tmp_path / "model.cpu.int8.onnx", rows)
    here = compare(ref_label, ref_score, ref_label, saturated, DEFAULT_THRESHOLDS["int8"])
    scale = float(np.max(np.abs(ref_score)))
    assert here.parity.max_abs_score_diff == pytest.approx(art.parity.max_abs_score_diff, abs=1e-4 * scale)
    check_parity(here, DEFAULT_THRESHOLDS["int8"], f"{which} cpu int8 on a saturating kernel")
    assert here.parity.max_abs_score_diff <= MARGIN * here.allowed_score_diff


def test_saturating_kernels_broke_8_bit_weights_and_not_ours(tmp_path: Path) -> None:
    """The net that turned main red on a CPU without VNNI: onnxruntime's default dynamic
    INT8 (8-bit weights per tensor) scores it 5x worse on a saturating kernel; the
    packager's own variant scores the same on both."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from packager.quantize import quantize_dynamic_int8

    model = AutoencoderDetector(hidden_layer_sizes=(12, 4, 12), max_iter=150).fit(trained.telemetry())
    src, default, ours = tmp_path / "fp32.onnx", tmp_path / "default.onnx", tmp_path / "ours.onnx"
    onnx.save(to_onnx(model).onnx, src)
    quantize_dynamic(src, default, op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8)
    quantize_dynamic_int8(src, ours)
    rows = _parity_rows(trained.telemetry().to_numpy())
    _, ref_score = reference_outputs(model, rows)
    allowed = DEFAULT_THRESHOLDS["int8"].allowed_score_diff(ref_score)

    def error(scores: np.ndarray) -> float:
        return float(np.max(np.abs(scores - ref_score)))

    assert error(exact_scores(default, rows)) < allowed < error(saturating_scores(default, rows))
    assert error(saturating_scores(default, rows)) > 3 * error(exact_scores(default, rows))
    np.testing.assert_allclose(
        saturating_scores(ours, rows), exact_scores(ours, rows), rtol=0, atol=1e-5 * allowed
    )


def test_trees_record_not_applicable_and_write_no_variant(tmp_path: Path) -> None:
    det = trained.iforest()
    assert not quantizable(to_onnx(det).onnx)
    result = build(det, targets=ALL, workdir=tmp_path, calibration=trained.telemetry().to_numpy())
    for art in result.artifacts:
        assert art.precision == "fp32"
        assert art.quantization.applied is False and art.quantization.reason == TREE_REASON
    assert not list(tmp_path.glob("*int8*")) and not list(tmp_path.glob("*fp16*"))


def test_demanding_int8_of_a_tree_ensemble_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PackagingError, match="int8 demanded but not applicable: tree ensemble"):
        build(trained.iforest(), targets=["cpu"], workdir=tmp_path, precision={"cpu": "int8"})


def test_nan_in_calibration_names_the_column(tmp_path: Path) -> None:
    calib = trained.telemetry().to_numpy().copy()
    calib[[5, 9], 4] = np.nan
    calib[7, 4] = np.inf
    with pytest.raises(PackagingError, match=r"3 NaN/inf value\(s\) in column 4 \('memory_used_pct'\)"):
        build(trained.pca(), targets=["cpu"], workdir=tmp_path / "w", calibration=calib)
    with pytest.raises(PackagingError, match="column 0"):
        check_calibration(np.array([[np.nan, 1.0]]), ["a", "b"])


def test_missed_reduced_precision_falls_back_or_raises_when_demanded(tmp_path: Path) -> None:
    strict = {"int8": Thresholds(min_label_agreement=1.0, score_atol=0.0, score_rtol=0.0, min_spearman=1.0)}
    calib = trained.telemetry().to_numpy()
    result = build(
        trained.pca(), targets=["cpu"], workdir=tmp_path / "a", calibration=calib, thresholds=strict
    )
    (art,) = result.artifacts
    assert art.precision == "fp32" and not art.quantization.applied
    assert art.quantization.method == "dynamic"
    assert "int8 missed parity" in art.quantization.reason and "missed by" in art.quantization.reason
    with pytest.raises(ParityError, match=r"cpu int8: .*missed by"):
        build(
            trained.pca(),
            targets=["cpu"],
            workdir=tmp_path / "b",
            calibration=calib,
            thresholds=strict,
            precision={"cpu": "int8"},
        )


def test_nnapi_without_calibration_ships_fp32_and_says_why(tmp_path: Path) -> None:
    result = build(trained.pca(), targets=["android-nnapi"], workdir=tmp_path, parity_rows=trained.holdout())
    (art,) = result.artifacts
    assert art.precision == "fp32" and art.quantization.reason.startswith("no calibration rows")
