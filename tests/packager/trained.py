"""Small trained models shared by the conversion tests, each trained once per session."""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd

from packager.detectors import AutoencoderDetector, IsolationForestDetector, PCADetector
from packager.telemetry import generate_telemetry


@cache
def telemetry() -> pd.DataFrame:
    return generate_telemetry(2000, seed=3).frame


@cache
def labels() -> np.ndarray:
    return generate_telemetry(2000, seed=3).is_anomaly.astype(np.int64)


@cache
def holdout() -> np.ndarray:
    return generate_telemetry(1500, seed=11).frame.to_numpy()


@cache
def iforest(n_estimators: int = 30) -> IsolationForestDetector:
    return IsolationForestDetector(n_estimators=n_estimators, contamination=0.05).fit(telemetry())


@cache
def autoencoder() -> AutoencoderDetector:
    # Trained to convergence (279 of 300 iterations): its INT8 error sits well inside the
    # gate on every target (about 45% of the allowed score error), so a CPU's or a
    # library's last-bit differences cannot flip the reduced-precision tests. The (12, 4,
    # 12) net stopped at 150 iterations sat at 97% of the gate on android-nnapi.
    return AutoencoderDetector(hidden_layer_sizes=(16, 6, 16), max_iter=300).fit(telemetry())


@cache
def pca() -> PCADetector:
    return PCADetector(n_components=5).fit(telemetry())
