"""What every engine shares: the engine types, the artifacts' output contract
(``Prediction``), input checking and the latency / Prometheus bookkeeping. The engines'
errors are in the device's one tree, ``device_sim.errors``."""

from __future__ import annotations

import enum
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from device_sim.engine.metrics import InferenceMetrics, LatencyRecorder, instruments
from device_sim.errors import InputError


class EngineType(enum.StrEnum):
    ONNX = "onnx"
    SKLEARN = "sklearn"


@dataclass(frozen=True)
class Prediction:
    labels: np.ndarray  # int64, -1 anomaly / 1 normal
    scores: np.ndarray  # float32, negative is anomalous

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def anomalies(self) -> int:
        return int((self.labels == -1).sum())


def as_matrix(features: Any, feature_names: Sequence[str] | None, n_features: int | None) -> np.ndarray:
    """float32 [N, F] from numpy, a list or a pandas DataFrame (columns put in manifest order)."""
    if hasattr(features, "columns") and hasattr(features, "to_numpy"):
        if feature_names:
            missing = [c for c in feature_names if c not in features.columns]
            if missing:
                raise InputError(f"features lack column(s) {', '.join(missing[:5])}")
            features = features[list(feature_names)]
        features = features.to_numpy()
    try:
        x = np.asarray(features, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"features are not numeric: {exc}") from None
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2:
        raise InputError(f"features must be 2-D [rows, features], got shape {list(x.shape)}")
    if n_features is not None and x.shape[1] != n_features:
        raise InputError(f"expected {n_features} features per row, got {x.shape[1]}")
    if x.shape[0] and not np.isfinite(x).all():
        row, col = (int(v) for v in np.argwhere(~np.isfinite(x))[0])
        raise InputError(f"non-finite value at row {row}, feature {col}")
    return np.ascontiguousarray(x)


class InferenceEngine(ABC):
    engine_type: EngineType
    provider: str = "cpu"

    def __init__(
        self,
        *,
        feature_names: Sequence[str] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.feature_names = list(feature_names) if feature_names else None
        self._recorder = LatencyRecorder()
        self._instruments = instruments(registry)
        self.registry = registry

    @property
    @abstractmethod
    def n_features(self) -> int | None: ...

    @abstractmethod
    def _run(self, x: np.ndarray) -> Prediction: ...

    def predict(self, features: Any) -> Prediction:
        x = as_matrix(features, self.feature_names, self.n_features)
        start = time.perf_counter()
        try:
            result = self._run(x)
        except Exception:
            self._recorder.record_error()
            self._instruments.total.labels(self.engine_type.value, "error").inc()
            raise
        elapsed = time.perf_counter() - start
        self._recorder.record(elapsed, len(x))
        self._instruments.duration.labels(self.engine_type.value, self.provider).observe(elapsed)
        self._instruments.total.labels(self.engine_type.value, "success").inc()
        return result

    def get_metrics(self) -> InferenceMetrics:
        return self._recorder.snapshot()

    def describe(self) -> str:
        return f"{self.engine_type.value} on {self.provider}"
