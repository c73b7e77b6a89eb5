"""A freshly activated version whose anomaly rate leaves its manifest's expected band in
its first rows: the device falls back to the previous version, never reinstalls it, and
says why (docs/behaviour.md). Off for manifests without a band."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device_sim.device import Device
from device_sim.transfer import SyncConfig
from tests.device_sim.forge import FEATURES, ort_model
from tests.device_sim.repo import Repo

FAST = SyncConfig(connect_timeout=1, read_timeout=1, deadline=10)


def profile(band: list[float] | None) -> dict[str, Any]:
    return {"score_edges": [0.0], "reference_histogram": [0.05, 0.95], "anomaly_rate": 0.05, "rows": 100,
            "expected_band": band}


@pytest.fixture
def repo() -> Repo:
    return Repo()


def enroll(repo: Repo, state: Path) -> Device:
    return Device.register(state, server="http://repo.test", enroll_token="mse_good", platform="linux",
                           root_envelope=json.loads(repo.roots[1]), device_id="dev-1",
                           transport=repo.transport(), config=FAST)


ROWS = np.ones((250, FEATURES), dtype=np.float32)  # every score positive under weight 1: normal


@pytest.mark.parametrize("band", [[0.0, 0.1], None])
def test_out_of_band_falls_back_to_the_previous_version(
    repo: Repo, tmp_path: Path, band: list[float] | None
) -> None:
    repo.publish("m", 1, ort_model(1.0), index_version=1)
    device = enroll(repo, tmp_path / "d")
    assert device.sync().ok and device.store.installed_versions() == {"m": 1}
    # v2 calls every row an anomaly (score = -sum(x)); its golden vectors agree: they are its own
    repo.publish("m", 2, ort_model(-1.0), index_version=2, manifest_kw={"behaviour": profile(band)})
    assert device.sync().ok and device.store.installed_versions() == {"m": 2}
    for _ in range(4):  # 1,000 rows: the default check length
        labels = device.predict(ROWS).labels
        assert (labels == -1).all()  # still v2 for these calls
    if band is None:  # no band in the manifest: nothing is judged
        assert device.store.installed_versions() == {"m": 2} and device.store.failed() == {}
        return
    assert device.store.installed_versions() == {"m": 1}
    assert device.store.failed() == {"m": {2}}
    assert (device.predict(ROWS).labels == 1).all()  # the next call is v1's
    device.sync()
    failed = [e for e in repo.reports if e["kind"] == "install_failed"]
    assert [(e["version"], e["reason"]) for e in failed] == [(2, "behaviour_out_of_band")]
    assert failed[0]["data"] == {
        "rows": 1000, "anomalies": 1000, "anomaly_rate": 1.0, "expected_band": [0.0, 0.1]}
    # and the next sync does not install it again
    again = device.sync()
    assert device.store.installed_versions() == {"m": 1}
    assert all(o.outcome != "installed" for o in again.outcomes)


def test_in_band_is_judged_once_and_kept(repo: Repo, tmp_path: Path) -> None:
    repo.publish("m", 1, ort_model(1.0), index_version=1)
    device = enroll(repo, tmp_path / "d")
    device.sync()
    repo.publish("m", 2, ort_model(1.0, bias=0.5), index_version=2,
                 manifest_kw={"behaviour": profile([0.0, 0.1])})
    device.sync()
    for _ in range(8):
        device.predict(ROWS)
    assert device.store.installed_versions() == {"m": 2} and device.store.failed() == {}
