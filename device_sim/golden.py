"""The device's onnxruntime: its version and providers (sent at enrollment), and the
golden-vector run that is checks 4.3 and 4.4's input.

``run_golden`` runs the artifact with packager.runtime, the one runner parity, the bundle
writer and ``modelsync verify`` use; the updater only takes a ``GoldenRunner``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnxruntime as ort

from device_sim import errors
from packager.manifest import GoldenVectors
from packager.runtime import run_artifact

GoldenRunner = Callable[[bytes, GoldenVectors], tuple[list[int], list[float]]]


def runtime_version() -> str:
    return str(ort.__version__)


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def run_golden(data: bytes, golden: GoldenVectors) -> tuple[list[int], list[float]]:
    """checks 4.3 (loads and runs on the CPU provider), then the outputs for check 4.4,
    through the packager's own runner, so the device computes what parity measured."""
    try:
        labels, scores = run_artifact(data, np.asarray(golden.inputs, dtype=np.float32))
    except Exception as exc:  # onnxruntime raises untyped pybind errors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise errors.ArtifactLoadError(
            f"onnxruntime cannot load or run the artifact: {first[:200]}") from None
    return [int(v) for v in labels], [float(v) for v in scores]
