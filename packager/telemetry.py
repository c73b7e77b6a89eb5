"""Synthetic field-device telemetry with injected anomalies, for the demo, tests and benchmarks.

Normal devices are drawn from correlated distributions (a hot device drains its battery
faster, a device low on storage restarts its app more often); anomalies are injected as a
few recognisable failure modes so that a detector has something real to find:

* ``thermal``       runaway battery temperature and drain, high CPU
* ``memory_leak``   memory pressure, app restarts and crashes
* ``storage_full``  almost no free storage, crashes
* ``network``       bursts of network errors with a weak signal
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

FEATURES: tuple[str, ...] = (
    "battery_level",  # percent
    "battery_temp_c",
    "battery_drain_pct_h",
    "cpu_util_pct",
    "memory_used_pct",
    "storage_free_gb",
    "network_errors_h",
    "crash_count_24h",
    "app_restarts_24h",
    "signal_strength_dbm",
    "uptime_h",
    "gps_fix_time_s",
)
ANOMALY_KINDS: tuple[str, ...] = ("thermal", "memory_leak", "storage_full", "network")


@dataclass(frozen=True)
class Telemetry:
    frame: pd.DataFrame  # one row per device report, columns = FEATURES, float32
    is_anomaly: np.ndarray  # bool per row: an anomaly was injected
    kind: np.ndarray  # "" or one of ANOMALY_KINDS per row

    @property
    def labels(self) -> np.ndarray:
        """scikit-learn's outlier convention: -1 injected anomaly, 1 normal."""
        return np.where(self.is_anomaly, -1, 1).astype(np.int64)


def generate_telemetry(n_rows: int = 2000, *, anomaly_fraction: float = 0.05, seed: int = 0) -> Telemetry:
    if n_rows < 1:
        raise ValueError("n_rows must be at least 1")
    if not 0.0 <= anomaly_fraction < 1.0:
        raise ValueError("anomaly_fraction must be in [0, 1)")
    rng = np.random.default_rng(seed)
    n = n_rows
    cpu = np.clip(rng.gamma(4.0, 7.0, n), 1, 100)
    temp = 28 + 0.12 * cpu + rng.normal(0, 2.0, n)
    drain = np.clip(2.0 + 0.05 * cpu + 0.08 * (temp - 30) + rng.normal(0, 0.6, n), 0.1, None)
    storage = np.clip(rng.lognormal(3.0, 0.5, n), 0.2, 256)
    memory = np.clip(35 + 0.25 * cpu + rng.normal(0, 8, n), 5, 99)
    signal = rng.normal(-85, 8, n)
    net_err = rng.poisson(np.clip(1.0 + 0.05 * (-70 - signal), 0.2, None))
    restarts = rng.poisson(0.3 + 2.0 / storage)
    crashes = rng.poisson(0.1 + 0.02 * restarts)
    data = {
        "battery_level": np.clip(rng.uniform(5, 100, n) - 0.5 * drain, 0, 100),
        "battery_temp_c": temp,
        "battery_drain_pct_h": drain,
        "cpu_util_pct": cpu,
        "memory_used_pct": memory,
        "storage_free_gb": storage,
        "network_errors_h": net_err.astype(float),
        "crash_count_24h": crashes.astype(float),
        "app_restarts_24h": restarts.astype(float),
        "signal_strength_dbm": signal,
        "uptime_h": rng.exponential(72, n),
        "gps_fix_time_s": rng.lognormal(1.5, 0.4, n),
    }
    kind = np.full(n, "", dtype=object)
    n_anom = round(anomaly_fraction * n)
    rows = rng.choice(n, size=n_anom, replace=False)
    for row, k in zip(rows, rng.choice(ANOMALY_KINDS, size=n_anom), strict=True):
        kind[row] = k
        if k == "thermal":
            data["battery_temp_c"][row] = rng.uniform(52, 70)
            data["battery_drain_pct_h"][row] = rng.uniform(15, 40)
            data["cpu_util_pct"][row] = rng.uniform(90, 100)
        elif k == "memory_leak":
            data["memory_used_pct"][row] = rng.uniform(96, 99.9)
            data["app_restarts_24h"][row] = rng.integers(12, 40)
            data["crash_count_24h"][row] = rng.integers(4, 15)
        elif k == "storage_full":
            data["storage_free_gb"][row] = rng.uniform(0.01, 0.15)
            data["crash_count_24h"][row] = rng.integers(3, 10)
        else:
            data["network_errors_h"][row] = rng.integers(40, 200)
            data["signal_strength_dbm"][row] = rng.uniform(-125, -112)
    frame = pd.DataFrame({name: np.asarray(data[name], dtype=np.float32) for name in FEATURES})
    return Telemetry(frame=frame, is_anomaly=kind != "", kind=kind.astype(str))
