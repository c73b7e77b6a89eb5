"""The one fallback path: candidates tried in order until one loads and predicts."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from device_sim.engine.base import EngineType, InferenceEngine, Prediction
from device_sim.engine.metrics import InferenceMetrics
from device_sim.errors import EngineError, InputError, ModelSyncError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    name: str
    load: Callable[[], InferenceEngine]


class FallbackEngine(InferenceEngine):
    """The new ONNX model, else the previous one, else the scikit-learn reference.

    A candidate that fails to load, or raises while predicting, is skipped for good and
    the reason kept in ``failures``; the next one serves the same request. The device keeps
    answering as long as any candidate works."""

    def __init__(self, candidates: Sequence[Candidate], *, registry: CollectorRegistry | None = None) -> None:
        if not candidates:
            raise EngineError("fallback engine needs at least one candidate")
        super().__init__(registry=registry)
        self._pending = list(candidates)
        self._lock = threading.Lock()
        self.failures: list[tuple[str, str]] = []
        self.active: InferenceEngine
        self.active_name: str
        self._advance()

    def _advance(self) -> None:
        while self._pending:
            cand = self._pending.pop(0)
            try:
                engine = cand.load()
            except ModelSyncError as exc:
                self._fail(cand.name, str(exc))
                continue
            self.active, self.active_name = engine, cand.name
            return
        tried = "; ".join(f"{n}: {r}" for n, r in self.failures)
        raise EngineError(f"no engine could serve ({tried})")

    def _fail(self, name: str, reason: str) -> None:
        log.warning("inference engine %s unusable: %s", name, reason)
        self.failures.append((name, reason))

    @property
    def engine_type(self) -> EngineType:  # type: ignore[override]
        return self.active.engine_type

    @property
    def provider(self) -> str:  # type: ignore[override]
        return self.active.provider

    @property
    def n_features(self) -> int | None:
        return self.active.n_features

    def predict(self, features: Any) -> Prediction:
        # Each candidate checks the input itself; a bad input is the caller's fault, not
        # a reason to abandon a working model.
        while True:
            with self._lock:
                engine, name = self.active, self.active_name
            try:
                return engine.predict(features)
            except InputError:
                raise
            except Exception as exc:
                with self._lock:
                    if self.active is engine:
                        self._fail(name, f"predict failed: {type(exc).__name__}: {exc}")
                        self._advance()

    def _run(self, x: np.ndarray) -> Prediction:  # pragma: no cover - predict is overridden
        return self.active.predict(x)

    def get_metrics(self) -> InferenceMetrics:
        return self.active.get_metrics()

    def describe(self) -> str:
        return f"{self.active_name} ({self.active.describe()})"
