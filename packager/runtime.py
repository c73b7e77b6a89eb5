"""The one place modelsync opens and runs an artifact with onnxruntime.

Parity (packager.parity), the pipeline's gates, the bundle writer's golden vectors and
``modelsync verify`` all run artifacts through ``run_artifact``, so what the packager
measured is what a device computes. ``load_session`` takes a path or the bytes a device
downloaded; the CPU provider is the default because that is what every parity figure in a
manifest was measured on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnxruntime as ort

CPU = "CPUExecutionProvider"
ORT_FORMAT_MARK = b"ORTM"  # the ORT FlatBuffer's file identifier, at bytes 4..8


def is_ort_format(data: bytes) -> bool:
    return data[4:8] == ORT_FORMAT_MARK


def load_session(
    model: str | Path | bytes, *, providers: Sequence[str] | None = None, threads: int = 1
) -> ort.InferenceSession:
    """An InferenceSession on ``providers`` (default: the CPU provider alone).

    One intra-op thread by default: parity figures must not depend on how many cores the
    packaging machine has, and callers that want speed say so.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3  # errors only: a device's log is not the place for ORT's notes
    if isinstance(model, bytes):
        # Bytes carry no ".ort" suffix for onnxruntime to recognise the format by.
        if is_ort_format(model):
            so.add_session_config_entry("session.load_model_format", "ORT")
        return ort.InferenceSession(model, sess_options=so, providers=list(providers or [CPU]))
    return ort.InferenceSession(str(model), sess_options=so, providers=list(providers or [CPU]))


def run_session(session: ort.InferenceSession, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label int64 [N], score float64 [N]) from an artifact-contract session.

    A file whose batch is fixed (NNAPI artifacts: [1, n]) is fed one batch at a time, the
    last one padded with copies of its final row and trimmed again.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    inp = session.get_inputs()[0]
    name, batch = inp.name, inp.shape[0]
    if isinstance(batch, int) and batch > 0:
        labels, scores = [], []
        for i in range(0, X.shape[0], batch):
            chunk = X[i : i + batch]
            if chunk.shape[0] < batch:
                chunk = np.vstack([chunk, np.repeat(chunk[-1:], batch - chunk.shape[0], axis=0)])
            lab, sco = session.run(["label", "score"], {name: chunk})
            n = min(batch, X.shape[0] - i)
            labels.append(np.asarray(lab)[:n])
            scores.append(np.asarray(sco)[:n])
        if not labels:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        return np.concatenate(labels).astype(np.int64), np.concatenate(scores).astype(np.float64)
    label, score = session.run(["label", "score"], {name: X})
    return np.asarray(label, dtype=np.int64), np.asarray(score, dtype=np.float64)


def run_artifact(
    model: str | Path | bytes, X: np.ndarray, *, providers: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(label int64 [N], score float64 [N]) of an ONNX/ORT artifact on ``X``.

    The score is the artifact's float32 output widened exactly to float64.
    """
    return run_session(load_session(model, providers=providers), X)
