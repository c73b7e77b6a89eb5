"""The quantized graph evaluated as onnxruntime's u8s8 kernel computes it on x86 CPUs
without VNNI (AVX2, AVX-512 before Cascade Lake).

There, MLAS multiplies the raw uint8 activations by the int8 weights with VPMADDUBSW,
which adds each pair of neighbouring products along K into an int16 *with saturation*,
then widens to int32; zero points are corrected separately from row and column sums, so
they are exact. A VNNI or ARM CPU accumulates straight into int32. This machine may have
either, so the tests evaluate the file both ways: onnxruntime for the kernel this CPU
has, and ``onnx.reference`` with this MatMulInteger for the saturating one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from packager.convert.outputs import INPUT, SCORE

INT16 = np.iinfo(np.int16)


class MatMulInteger(OpRun):
    # onnx.reference replaces an operator by a class with the operator's own name


    def _run(  # type: ignore[override]
        self, a: np.ndarray, b: np.ndarray, a_zero_point: Any = None, b_zero_point: Any = None
    ) -> tuple[np.ndarray]:
        a32, b32 = a.astype(np.int32), b.astype(np.int32)
        if a32.shape[-1] % 2:  # VPMADDUBSW pairs along K; an odd K is padded with a zero
            a32 = np.concatenate([a32, np.zeros((*a32.shape[:-1], 1), np.int32)], axis=-1)
            b32 = np.concatenate([b32, np.zeros((1, *b32.shape[1:]), np.int32)], axis=0)
        products = a32[:, :, None] * b32[None, :, :]  # rows x K x columns
        pairs = np.clip(products[:, 0::2, :] + products[:, 1::2, :], INT16.min, INT16.max)
        acc = pairs.sum(axis=1)
        k = a.shape[-1]
        a_zp = np.int32(0 if a_zero_point is None else np.asarray(a_zero_point).reshape(()))
        b_zp = np.zeros(1, np.int32) if b_zero_point is None else np.asarray(b_zero_point, np.int32)
        b_zp = b_zp.reshape(-1)[None, :]
        row_sums, col_sums = a32.sum(axis=1)[:, None], b32.sum(axis=0)[None, :]
        acc = acc - a_zp * col_sums - b_zp * row_sums + k * a_zp * b_zp
        return (acc.astype(np.int32),)


def saturating_scores(path: Path, rows: np.ndarray) -> np.ndarray:
    """The score output of the ONNX file at ``path`` on a saturating u8s8 kernel."""
    return _scores(path, rows, [MatMulInteger])


def exact_scores(path: Path, rows: np.ndarray) -> np.ndarray:
    """The score output with exact int32 accumulation (VNNI, ARM), whatever this CPU has."""
    return _scores(path, rows, [])


def _scores(path: Path, rows: np.ndarray, ops: list[type[OpRun]]) -> np.ndarray:
    model = onnx.load(path)
    evaluator = ReferenceEvaluator(model, new_ops=ops or None)
    (score,) = evaluator.run([SCORE], {INPUT: np.asarray(rows, np.float32)})
    return np.asarray(score, dtype=np.float64).reshape(-1)
