"""The detectors a release engineer trains, with scikit-learn's conventions throughout.

Every detector here, and every object ``packager.pipeline.build`` accepts, answers the
same two questions the packaged artifacts answer:

* ``decision_function(X)``: a float per row, **negative = anomalous**, 0 is the threshold;
* ``predict(X)``: -1 (anomaly) where the decision is negative, else 1.

Families:

``IsolationForestDetector``  scikit-learn's IsolationForest (converted by our own
                             single-TreeEnsemble converter).
``AutoencoderDetector``      MLPRegressor trained to reproduce StandardScaler'd inputs;
                             error = mean squared reconstruction error per row,
                             ``threshold_`` = the (1 - contamination) quantile of the
                             training errors, decision = ``threshold_ - error``.
``PCADetector``              the same with a PCA projection as the "autoencoder".
``ClassifierDetector``       any probabilistic classifier (LightGBM's LGBMClassifier,
                             scikit-learn classifiers and pipelines) read as a failure
                             detector: one class is the *failure* class and
                             decision = max(P(other classes)) - P(failure), so it is
                             negative exactly when the failure class wins the argmax,
                             i.e. when ``predict`` of the classifier says "failure". For a
                             binary classifier that is ``1 - 2 * P(failure)``. The failure
                             class defaults to -1, else 1, else True, else "failure".
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import sklearn
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor
from sklearn.preprocessing import StandardScaler

from packager.errors import UnsupportedModelError, UsageError


def training_data_sha256(X: np.ndarray) -> str:
    """sha256 of the training matrix as C-ordered float32 bytes (what the model saw)."""
    return hashlib.sha256(np.ascontiguousarray(X, dtype=np.float32).tobytes()).hexdigest()


def as_matrix(X: Any, feature_names: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """A float32 matrix and its column names from a DataFrame or an array."""
    if isinstance(X, pd.DataFrame):
        names = [str(c) for c in X.columns]
        if feature_names is not None and list(feature_names) != names:
            raise UsageError(f"DataFrame columns {names} differ from feature_names {list(feature_names)}")
        matrix = X.to_numpy(dtype=np.float32)
    else:
        matrix = np.asarray(X, dtype=np.float32)
        if matrix.ndim != 2:
            raise UsageError(f"expected a 2-D array of rows x features, got shape {matrix.shape}")
        names = (
            list(feature_names) if feature_names is not None else [f"f{i}" for i in range(matrix.shape[1])]
        )
    if len(names) != matrix.shape[1]:
        raise UsageError(f"{len(names)} feature names for {matrix.shape[1]} columns")
    return matrix, names


class Detector:
    """Shared plumbing: feature bookkeeping and sklearn-style predict (files: packager.export)."""

    family: ClassVar[str] = "sklearn"
    feature_names_: list[str]
    training_data_sha256_: str | None = None
    threshold: float = 0.0  # on decision_function; below it is an anomaly

    @property
    def n_features_in_(self) -> int:
        return len(self.feature_names_)

    def _rows(self, X: Any) -> np.ndarray:
        matrix, _ = as_matrix(X)
        if isinstance(X, pd.DataFrame) and [str(c) for c in X.columns] != self.feature_names_:
            raise UsageError(
                f"columns {list(X.columns)} differ from the trained features {self.feature_names_}"
            )
        if matrix.shape[1] != self.n_features_in_:
            raise UsageError(f"{matrix.shape[1]} features given, the model expects {self.n_features_in_}")
        return matrix

    def decision_function(self, X: Any) -> np.ndarray:
        raise NotImplementedError

    def score_samples(self, X: Any) -> np.ndarray:
        """Higher is more normal; differs from decision_function by the fixed threshold."""
        return self.decision_function(X)

    def predict(self, X: Any) -> np.ndarray:
        return np.where(self.decision_function(X) < 0, -1, 1).astype(np.int64)

    @property
    def framework(self) -> tuple[str, str]:
        return "scikit-learn", sklearn.__version__


class IsolationForestDetector(Detector):
    family: ClassVar[str] = "isolation_forest"

    def __init__(
        self,
        *,
        n_estimators: int = 100,
        contamination: float | str = "auto",
        max_samples: int | float | str = "auto",
        max_features: float = 1.0,
        random_state: int | None = 0,
    ) -> None:
        self.model_ = IsolationForest(
            n_estimators=n_estimators,
            contamination=contamination,
            max_samples=max_samples,
            max_features=max_features,
            random_state=random_state,
            n_jobs=1,
        )

    def fit(
        self, X: Any, y: Any = None, feature_names: Sequence[str] | None = None
    ) -> IsolationForestDetector:
        matrix, self.feature_names_ = as_matrix(X, feature_names)
        self.training_data_sha256_ = training_data_sha256(matrix)
        self.model_.fit(matrix)
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        return np.asarray(self.model_.decision_function(self._rows(X)))

    def score_samples(self, X: Any) -> np.ndarray:
        return np.asarray(self.model_.score_samples(self._rows(X)))

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.model_.predict(self._rows(X)), dtype=np.int64)


class _ReconstructionDetector(Detector):
    """Score = threshold_ - mean squared reconstruction error of standardized inputs."""

    contamination: float
    scaler_: StandardScaler
    threshold_: float

    def _fit_reconstruction(self, z: np.ndarray) -> None:
        raise NotImplementedError

    def reconstruct(self, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fit(
        self, X: Any, y: Any = None, feature_names: Sequence[str] | None = None
    ) -> _ReconstructionDetector:
        if not 0.0 < self.contamination < 0.5:
            raise UsageError(f"contamination must be in (0, 0.5), got {self.contamination}")
        matrix, self.feature_names_ = as_matrix(X, feature_names)
        self.training_data_sha256_ = training_data_sha256(matrix)
        self.scaler_ = StandardScaler().fit(matrix)
        z = self.scaler_.transform(matrix)
        self._fit_reconstruction(z)
        self.threshold_ = float(np.quantile(self._errors(z), 1.0 - self.contamination))
        return self

    def _errors(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(np.mean((z - self.reconstruct(z)) ** 2, axis=1))

    def reconstruction_error(self, X: Any) -> np.ndarray:
        return self._errors(self.scaler_.transform(self._rows(X)))

    def decision_function(self, X: Any) -> np.ndarray:
        return self.threshold_ - self.reconstruction_error(X)

    def score_samples(self, X: Any) -> np.ndarray:
        return -self.reconstruction_error(X)


class AutoencoderDetector(_ReconstructionDetector):
    family: ClassVar[str] = "autoencoder"

    def __init__(
        self,
        *,
        hidden_layer_sizes: Sequence[int] = (16, 4, 16),
        contamination: float = 0.05,
        activation: str = "relu",
        max_iter: int = 300,
        random_state: int | None = 0,
    ) -> None:
        self.contamination = contamination
        self.mlp_ = MLPRegressor(
            hidden_layer_sizes=tuple(hidden_layer_sizes),
            activation=activation,
            max_iter=max_iter,
            random_state=random_state,
            early_stopping=False,
        )
        self.converged_ = False

    def _fit_reconstruction(self, z: np.ndarray) -> None:
        # A small autoencoder rarely reaches sklearn's tol in max_iter; that is recorded
        # in converged_ rather than raised as a warning the caller cannot act on.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            self.mlp_.fit(z, z)
        self.converged_ = not any(issubclass(w.category, ConvergenceWarning) for w in caught)

    def reconstruct(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(self.mlp_.predict(z)).reshape(z.shape)


class PCADetector(_ReconstructionDetector):
    family: ClassVar[str] = "pca"

    def __init__(
        self, *, n_components: int | float = 0.9, contamination: float = 0.05, random_state: int | None = 0
    ) -> None:
        self.contamination = contamination
        self.pca_ = PCA(n_components=n_components, random_state=random_state)

    def _fit_reconstruction(self, z: np.ndarray) -> None:
        self.pca_.fit(z)

    def reconstruct(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(self.pca_.inverse_transform(self.pca_.transform(z)))


def default_failure_class(classes: Sequence[Any]) -> Any:
    values = list(classes)
    for candidate in (-1, 1, "failure"):  # 1 also matches True
        if candidate in values:
            return values[values.index(candidate)]
    raise UnsupportedModelError(
        f"cannot tell which of the classes {values} is the failure class; "
        "wrap the model in ClassifierDetector(model, failure_class=...)"
    )


class ClassifierDetector(Detector):
    """A fitted probabilistic classifier read as a detector (see the module docstring)."""

    def __init__(
        self, estimator: Any, failure_class: Any = None, feature_names: Sequence[str] | None = None
    ) -> None:
        if not hasattr(estimator, "predict_proba") or not hasattr(estimator, "classes_"):
            raise UnsupportedModelError(
                f"{type(estimator).__name__} is not a fitted probabilistic classifier "
                "(no predict_proba/classes_)"
            )
        self.estimator = estimator
        self.classes_ = np.asarray(estimator.classes_).tolist()
        if len(self.classes_) < 2:
            raise UnsupportedModelError("a classifier with fewer than two classes cannot flag failures")
        self.failure_class = default_failure_class(self.classes_) if failure_class is None else failure_class
        if self.failure_class not in self.classes_:
            raise UsageError(f"failure class {self.failure_class!r} is not one of {self.classes_}")
        self.failure_index = self.classes_.index(self.failure_class)
        n = int(getattr(estimator, "n_features_in_", 0) or 0)
        names = getattr(estimator, "feature_names_in_", None)
        if feature_names is not None:
            self.feature_names_ = list(feature_names)
        elif names is not None:
            self.feature_names_ = [str(x) for x in names]
        else:
            self.feature_names_ = [f"f{i}" for i in range(n)]
        if n and len(self.feature_names_) != n:
            raise UsageError(f"{len(self.feature_names_)} feature names for a model with {n} features")

    @property
    def family(self) -> str:  # type: ignore[override]
        return "lightgbm" if type(self.estimator).__module__.startswith("lightgbm") else "sklearn"

    @property
    def framework(self) -> tuple[str, str]:
        if self.family == "lightgbm":
            import lightgbm

            return "lightgbm", lightgbm.__version__
        return "scikit-learn", sklearn.__version__

    def _proba(self, X: Any) -> np.ndarray:
        rows = self._rows(X)
        names = getattr(self.estimator, "feature_names_in_", None)
        data: Any = pd.DataFrame(rows, columns=list(names)) if names is not None else rows
        return np.asarray(self.estimator.predict_proba(data), dtype=np.float64)

    def decision_function(self, X: Any) -> np.ndarray:
        proba = self._proba(X)
        others = np.delete(proba, self.failure_index, axis=1)
        return np.asarray(others.max(axis=1) - proba[:, self.failure_index])
