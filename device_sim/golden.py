"""The device's onnxruntime: its version and providers (sent at enrollment), and the
golden-vector run that is checks 4.3 and 4.4's input.

Kept apart so the one artifact runner the packager is getting can replace ``run_golden``
without touching the updater, which only takes a ``GoldenRunner``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnxruntime as ort

from device_sim import errors
from packager.manifest import GoldenVectors

GoldenRunner = Callable[[bytes, GoldenVectors], tuple[list[int], list[float]]]


def runtime_version() -> str:
    return str(ort.__version__)


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def run_golden(data: bytes, golden: GoldenVectors) -> tuple[list[int], list[float]]:
    """checks 4.3 (loads and runs on the CPU provider), then the outputs for check 4.4."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if data[4:8] == b"ORTM":  # ORT-format FlatBuffer identifier
        opts.add_session_config_entry("session.load_model_format", "ORT")
    try:
        sess = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        outs = [o.name for o in sess.get_outputs()]
        names = ["label", "score"] if {"label", "score"} <= set(outs) else outs[:2]
        if len(names) != 2:
            raise ValueError(f"expected outputs label and score, found {outs}")
        dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        x = np.asarray(golden.inputs, dtype=dtype)
        # An NPU-friendly artifact may fix the batch at 1: feed it row by row.
        rows = [x[i : i + 1] for i in range(len(x))] if inp.shape and inp.shape[0] == 1 else [x]
        labels: list[int] = []
        scores: list[float] = []
        for batch in rows:
            lab, sc = sess.run(names, {inp.name: batch})
            labels += [int(v) for v in np.asarray(lab).ravel()]
            scores += [float(v) for v in np.asarray(sc, dtype=np.float64).ravel()]
    except Exception as exc:  # onnxruntime raises untyped pybind errors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise errors.ArtifactLoadError(
            f"onnxruntime cannot load or run the artifact: {first[:200]}") from None
    return labels, scores
