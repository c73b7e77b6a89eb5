"""The scikit-learn reference engine (a joblib pickle, unpickled only once its sha256
matched the manifest's). joblib and scikit-learn are imported only when it is asked for."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from device_sim.engine.base import EngineType, InferenceEngine, Prediction
from device_sim.errors import ModelLoadError


class SklearnEngine(InferenceEngine):
    """The scikit-learn reference (joblib). Loading a pickle runs code: only ever from a
    file whose sha256 a signed manifest vouches for (pass ``expected_sha256``)."""

    engine_type = EngineType.SKLEARN
    provider = "sklearn"

    def __init__(
        self,
        model: str | Path | Any,
        *,
        expected_sha256: str | None = None,
        feature_names: Sequence[str] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        super().__init__(feature_names=feature_names, registry=registry)
        if isinstance(model, str | Path):
            self.source = str(model)
            self.estimator = load_reference(Path(model), expected_sha256)
        else:
            self.source = type(model).__name__
            self.estimator = model
        self._n_features = getattr(self.estimator, "n_features_in_", None)

    @property
    def n_features(self) -> int | None:
        return int(self._n_features) if self._n_features is not None else None

    def _run(self, x: np.ndarray) -> Prediction:
        return reference_predict(self.estimator, x)


def load_reference(path: Path, expected_sha256: str | None) -> Any:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read reference {path}: {exc.strerror}") from None
    if expected_sha256 is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != expected_sha256:
            raise ModelLoadError(
                f"reference {path.name}: sha256 {got[:12]}… does not match the manifest's "
                f"{expected_sha256[:12]}…; refusing to unpickle it"
            )
    import io

    import joblib  # lazy: pulls in scikit-learn only when the reference is wanted

    try:
        return joblib.load(io.BytesIO(data))
    except Exception as exc:  # unpickling raises anything
        raise ModelLoadError(f"cannot load reference {path.name}: {type(exc).__name__}: {exc}") from None


def reference_predict(estimator: Any, x: np.ndarray) -> Prediction:
    """Labels and scores from a scikit-learn style object, as the artifacts define them."""
    labels = np.asarray(estimator.predict(x)).astype(np.int64).ravel()
    if hasattr(estimator, "decision_function"):
        scores = estimator.decision_function(x)
    else:
        scores = estimator.score_samples(x)
    return Prediction(labels, np.asarray(scores, dtype=np.float32).ravel())
