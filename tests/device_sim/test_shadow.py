"""Shadow runs on the Python device (device_sim/shadow.py, check 2.7 in updater.py): the shared
vectors (tests/vectors/shadow.json). The device against the real service, on SQLite and
PostgreSQL: tests/sync_service/test_shadow_device.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device_sim.shadow import AgreementWindow
from packager.manifest import ShadowEntry
from packager.rollout import pick_shadow

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "shadow.json").read_text())
SHA = "0" * 64


@pytest.mark.parametrize("case", VECTORS["windows"], ids=lambda c: c["name"])
def test_agreement_windows_match_the_vectors(case: dict[str, Any]) -> None:
    window = AgreementWindow(candidate=2, active_version=1, since="2026-01-01T00:00:00Z")
    for call in case["calls"]:
        rows = np.asarray(call, dtype=np.float64)
        window.observe(rows[:, 1].astype(np.int64), rows[:, 0], rows[:, 3].astype(np.int64), rows[:, 2])
    got = window.report()
    assert got.pop("since") == "2026-01-01T00:00:00Z" and got.pop("active_version") == 1
    assert got == case["expected"]


@pytest.mark.parametrize("case", VECTORS["pick"], ids=lambda c: c["name"])
def test_the_shadow_a_device_holds_matches_the_vectors(case: dict[str, Any]) -> None:
    entries = [ShadowEntry.model_validate({
        "model": "m", "version": e["version"], "rollout": e["rollout"],
        "manifest": {"path": f"blobs/{SHA}", "length": 1, "sha256": SHA},
        "report_after": {"rows": 10, "hours": 1}}) for e in case["entries"]]
    got = pick_shadow(entries, case["device_id"], case["runs_version"], set(case["failed"]))
    assert (got.version if got else None) == case["expected_version"]
