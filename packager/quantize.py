"""INT8 and FP16 variants of a converted graph, for the targets where they mean something.

=============  ==============================================  ==============================
target         variant                                         why
=============  ==============================================  ==============================
cpu            INT8 dynamic (weights int8 per output channel   ORT's CPU kernels run
               on 7 bits, activations uint8 quantized per       MatMulInteger fast, and
               batch at run time)                               7 bits keep them exact
android-nnapi  INT8 static QDQ, uint8 per tensor, scales from  NNAPI runs quantized QDQ
               the calibration rows (MinMax)                    groups on the NPU
ios-coreml     FP16 weights and arithmetic, float32 input and  CoreML computes in fp16
               outputs kept (keep_io_types)                     on the Neural Engine
=============  ==============================================  ==============================

Only MatMul (and Gemm) are quantized: they hold the weights, and the few elementwise
nodes that turn a reconstruction into a score would lose the score's precision for no
speed.

Why 7-bit weights on the CPU: onnxruntime's u8s8 kernel on x86 CPUs without VNNI (AVX2,
AVX-512 before Cascade Lake) adds pairs of uint8 x int8 products in int16 with saturation
(VPMADDUBSW); 255 x 127 x 2 overflows it, so the same file scores differently there than
on a VNNI or ARM CPU. Measured on the tests' autoencoder (max |score error| against the
reference, gate 1.60): 8-bit per-tensor weights 1.13 with VNNI and 5.74 on a saturating
kernel, which made the gate refuse INT8 on some machines and not others. With
``reduce_range`` the weights span [-64, 63], 255 x 64 x 2 = 32,640 fits in int16, and
every kernel computes the same integers; per-channel scales win back the lost bit
(1.05 on every kernel). tests/packager/test_quantize.py evaluates the file under a
saturating kernel to hold this.

Graphs with nothing to quantize, tree ensembles above all, get no variant at all:
:data:`TREE_REASON` is recorded instead, never a fake INT8 file.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx

from packager.convert.outputs import INPUT, check_contract
from packager.errors import PackagingError
from packager.manifest import Quantization

WEIGHT_OPS = ("MatMul", "Gemm", "Conv")
TREE_OPS = ("TreeEnsembleRegressor", "TreeEnsembleClassifier", "TreeEnsemble")
TREE_REASON = "tree ensemble: no weights/MatMul for INT8; NNAPI/CoreML run no tree operators"
METHOD_FOR_TARGET = {"cpu": "dynamic", "android-nnapi": "qdq-static", "ios-coreml": "float16"}
PRECISION_FOR_METHOD = {"dynamic": "int8", "qdq-static": "int8", "float16": "fp16"}


def quantizable(model: onnx.ModelProto) -> bool:
    """True when some MatMul/Gemm/Conv multiplies by a constant weight."""
    inits = {t.name for t in model.graph.initializer}
    return any(n.op_type in WEIGHT_OPS and any(i in inits for i in n.input) for n in model.graph.node)


def not_applicable_reason(model: onnx.ModelProto) -> str:
    if any(n.op_type in TREE_OPS for n in model.graph.node):
        return TREE_REASON
    return "no MatMul/Gemm/Conv weights in the graph: nothing for INT8/FP16 to act on"


def check_calibration(rows: np.ndarray, feature_names: Sequence[str]) -> np.ndarray:
    """Calibration rows as float32; NaN/inf named by column (they would poison the scales)."""
    matrix = np.asarray(rows, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise PackagingError(f"calibration data must be a non-empty 2-D array, got shape {matrix.shape}")
    bad = ~np.isfinite(matrix)
    if bad.any():
        col = int(np.argmax(bad.any(axis=0)))
        name = feature_names[col] if col < len(feature_names) else f"column {col}"
        count = int(bad[:, col].sum())
        raise PackagingError(
            f"calibration data has {count} NaN/inf value(s) in column {col} ({name!r}); "
            "clean or drop those rows before packaging"
        )
    return matrix


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization logs "consider pre-processing" on the root logger for every
    call; the advice is for CNNs with shape-dependent fusions, not these small graphs."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


class RowsReader:
    """onnxruntime CalibrationDataReader over calibration rows, in batches."""

    def __init__(self, rows: np.ndarray, batch: int = 256) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = (
            {INPUT: rows[i : i + batch]} for i in range(0, rows.shape[0], batch)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_dynamic_int8(src: Path, dst: Path) -> Quantization:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_root_logger():
        quantize_dynamic(
            src,
            dst,
            op_types_to_quantize=list(WEIGHT_OPS[:2]),
            weight_type=QuantType.QInt8,
            # see the module docstring: exact on saturating u8s8 kernels too
            per_channel=True,
            reduce_range=True,
        )
    return Quantization(
        applied=True,
        method="dynamic",
        reason=(
            "INT8 dynamic quantization of MatMul weights (per channel, 7-bit so that no "
            "CPU kernel saturates) for the CPU provider"
        ),
    )


def with_range_probes(calibration: np.ndarray, seed: int = 1) -> np.ndarray:
    """Calibration rows plus as many rows drawn uniformly from their per-feature ranges.

    MinMax scales from normal rows alone saturate on the unusual feature combinations a
    detector exists to flag (measured on the autoencoder: max |score error| 7.8 against
    1.2 with the probes); the probes stay inside the ranges the engineer supplied.
    """
    rng = np.random.default_rng(seed)
    low, high = calibration.min(axis=0), calibration.max(axis=0)
    probes = rng.uniform(low, np.maximum(high, low), size=calibration.shape).astype(np.float32)
    return np.vstack([calibration, probes])


def quantize_static_qdq(src: Path, dst: Path, calibration: np.ndarray) -> Quantization:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    calibration = np.asarray(calibration, dtype=np.float32)
    with _quiet_root_logger():
        quantize_static(
            src,
            dst,
            RowsReader(with_range_probes(calibration)),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(WEIGHT_OPS[:2]),
            # NNAPI's quantized operators take uint8 activations and weights, per tensor.
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QUInt8,
            per_channel=False,
        )
    return Quantization(
        applied=True,
        method="qdq-static",
        reason=(
            f"INT8 static QDQ (uint8, MinMax over {calibration.shape[0]} calibration rows "
            "plus as many range probes) for NNAPI"
        ),
    )


def convert_float16(src: Path, dst: Path) -> Quantization:
    from onnxconverter_common import float16

    model = onnx.load(src)
    with warnings.catch_warnings():
        # Weights below fp16's range are clamped to min_positive_val; the parity gate
        # measures the effect, a warning per weight adds nothing.
        warnings.simplefilter("ignore", UserWarning)
        half = float16.convert_float_to_float16(model, keep_io_types=True)
    onnx.save(half, dst)
    return Quantization(
        applied=True,
        method="float16",
        reason="FP16 weights and arithmetic for CoreML; float32 input and score kept",
    )


def make_variant(target: str, src: Path, dst: Path, calibration: np.ndarray | None) -> Quantization:
    """Write the target's reduced-precision variant of ``src`` to ``dst``."""
    method = METHOD_FOR_TARGET[target]
    if method == "dynamic":
        record = quantize_dynamic_int8(src, dst)
    elif method == "qdq-static":
        if calibration is None:
            raise PackagingError("static INT8 for android-nnapi needs calibration rows")
        record = quantize_static_qdq(src, dst, calibration)
    else:
        record = convert_float16(src, dst)
    try:
        check_contract(onnx.load(dst))
    except ValueError as exc:
        raise PackagingError(f"{target} {method} variant broke the artifact contract: {exc}") from exc
    return record
