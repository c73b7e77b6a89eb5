from __future__ import annotations

import numpy as np
import pytest

from packager.telemetry import ANOMALY_KINDS, FEATURES, generate_telemetry


def test_shape_names_and_injected_fraction() -> None:
    t = generate_telemetry(1000, anomaly_fraction=0.1, seed=1)
    assert list(t.frame.columns) == list(FEATURES)
    assert len(FEATURES) >= 12
    assert t.frame.dtypes.unique().tolist() == [np.float32]
    assert int(t.is_anomaly.sum()) == 100
    assert set(t.kind[t.is_anomaly]) <= set(ANOMALY_KINDS)
    assert set(t.labels[t.is_anomaly]) == {-1} and set(t.labels[~t.is_anomaly]) == {1}
    assert np.isfinite(t.frame.to_numpy()).all()


def test_seeded_and_anomalies_stand_out() -> None:
    a, b = generate_telemetry(500, seed=7), generate_telemetry(500, seed=7)
    assert a.frame.equals(b.frame)
    assert not a.frame.equals(generate_telemetry(500, seed=8).frame)
    t = generate_telemetry(2000, seed=2)
    thermal = t.kind == "thermal"
    assert t.frame["battery_temp_c"][thermal].min() > t.frame["battery_temp_c"][~t.is_anomaly].quantile(0.99)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n_rows"):
        generate_telemetry(0)
    with pytest.raises(ValueError, match="anomaly_fraction"):
        generate_telemetry(10, anomaly_fraction=1.5)
