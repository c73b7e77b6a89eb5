"""INT8/FP16 variants: applied and gated where there are weights, refused where there are none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from packager.convert import to_onnx
from packager.errors import PackagingError, ParityError
from packager.parity import Thresholds
from packager.pipeline import build
from packager.quantize import TREE_REASON, check_calibration, quantizable
from tests.packager import trained

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
    for art in result.artifacts:
        precision, method, ops = EXPECTED[art.target]
        assert art.precision == precision
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
