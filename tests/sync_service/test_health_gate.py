"""The rollout health gate: pure thresholds, then 24 devices reporting over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from packager.manifest import Root
from sync_service import metrics
from sync_service.health_gate import judge
from tests.sync_service.fleet_helpers import (
    bearer,
    create_release,
    event,
    fresh_index,
    publish,
    register,
    report,
    service_root,
)


@pytest.mark.parametrize(
    ("reporting", "failing", "halt"),
    [
        (20, 1, True),  # exactly 5%
        (60, 3, True),  # 5% where 0.05 * 60 is not exact in floating point
        (21, 1, False),  # 4.8%
        (19, 19, False),  # too few devices to judge
        (0, 0, False),
        (100, 50, True),
    ],
)
def test_judge(reporting: int, failing: int, halt: bool) -> None:
    assert judge(reporting, failing, failure_rate=0.05, min_devices=20).halt is halt


def test_reason_carries_the_numbers() -> None:
    verdict = judge(20, 2, failure_rate=0.05, min_devices=20)
    assert verdict.reason(0.05) == "health gate: 2 of 20 reporting devices failed (10.0% >= 5.0%)"


@pytest.fixture
def rollout(
    client: TestClient, auth: dict[str, str], fleet: str, bundle_factory: Callable[..., Path]
) -> dict[str, int]:
    for v in (1, 2):
        publish(client, auth, bundle_factory(version=v, seed=v))
    r1 = create_release(client, auth, version=1, percent=100)
    r2 = create_release(client, auth, version=2, percent=50)
    return {"v1": r1["id"], "v2": r2["id"]}


def _halts() -> float:
    return float(metrics.HALTS.labels("health_gate")._value.get())


def test_gate_halts_a_failing_release_over_http(
    live_server: str, auth: dict[str, str], enrollment_token: str, rollout: dict[str, int], server_keys: Path
) -> None:
    root: Root = service_root(server_keys)
    halts_before = _halts()
    with httpx.Client(base_url=live_server, timeout=30) as http:
        tokens = [register(http, enrollment_token, f"dev-{i:02d}") for i in range(24)]
        # 19 healthy installs: 19 reporting devices, below the minimum of 20 to judge.
        for i in range(19):
            report(http, tokens[i], f"dev-{i:02d}", [event("installed", version=2)])
        # One failure makes 20 reporting, 1 failing: 5% >= 5% with 20 devices → halt.
        report(http, tokens[19], "dev-19", [event("golden_failed", version=2, reason="golden_mismatch")])
        status = http.get(f"/v1/releases/{rollout['v2']}/status", headers=auth).json()
        assert status["release"]["state"] == "halted"
        assert status["halted_by_health_gate"] is True
        assert (
            status["release"]["halt_reason"] == "health gate: 1 of 20 reporting devices failed (5.0% >= 5.0%)"
        )
        index = fresh_index(
            json.loads(http.get("/v1/channels/stable/index", headers=bearer(tokens[0])).content), root
        )
        assert [e.version for e in index.models["demo"]] == [1]  # the fallback only
        assert _halts() == halts_before + 1
        # Later failures do not halt it again or write more index versions.
        version = index.version
        for i in range(20, 24):
            report(http, tokens[i], f"dev-{i:02d}", [event("install_failed", version=2, reason="disk_full")])
        again = fresh_index(
            json.loads(http.get("/v1/channels/stable/index", headers=bearer(tokens[0])).content), root
        )
        assert again.version == version
        assert _halts() == halts_before + 1
        # The fallback release (v1) is untouched by reports on v2.
        assert http.get(f"/v1/releases/{rollout['v1']}", headers=auth).json()["state"] == "active"


def test_healthy_release_stays_and_failures_on_other_versions_do_not_count(
    client: TestClient, auth: dict[str, str], enrollment_token: str, rollout: dict[str, int]
) -> None:
    tokens = [register(client, enrollment_token, f"dev-{i:02d}") for i in range(25)]
    for i, token in enumerate(tokens):
        events = [event("installed", version=2)]
        if i < 5:
            events.append(event("install_failed", version=1, reason="old version"))  # not on this release
        report(client, token, f"dev-{i:02d}", events)
    report(client, tokens[0], "dev-00", [event("install_failed", version=2, reason="once")])  # 1 of 25: 4%
    state = client.get(f"/v1/releases/{rollout['v2']}", headers=auth).json()["state"]
    assert state == "active"


def test_resumed_release_is_judged_on_new_reports_only(
    client: TestClient, auth: dict[str, str], enrollment_token: str, rollout: dict[str, int]
) -> None:
    tokens = [register(client, enrollment_token, f"dev-{i:02d}") for i in range(20)]
    for i, token in enumerate(tokens):
        kind = "install_failed" if i < 2 else "installed"
        report(client, token, f"dev-{i:02d}", [event(kind, version=2, reason="flaky" if i < 2 else None)])
    assert client.get(f"/v1/releases/{rollout['v2']}", headers=auth).json()["state"] == "halted"
    resumed = client.post(f"/v1/releases/{rollout['v2']}/resume", headers=auth).json()
    assert (resumed["state"], resumed["halted_by_health_gate"]) == ("active", False)
    report(client, tokens[5], "dev-05", [event("installed", version=2)])
    assert client.get(f"/v1/releases/{rollout['v2']}", headers=auth).json()["state"] == "active"


def test_devices_that_cannot_take_the_artifact_do_not_count(
    client: TestClient, auth: dict[str, str], enrollment_token: str, rollout: dict[str, int]
) -> None:
    tokens = [register(client, enrollment_token, f"dev-{i:02d}") for i in range(25)]
    for i, token in enumerate(tokens):
        if i < 20:
            report(client, token, f"dev-{i:02d}", [event("installed", version=2)])
        else:
            reason = "runtime_too_old" if i % 2 else "no_artifact_for_target"
            report(client, token, f"dev-{i:02d}", [event("install_failed", version=2, reason=reason)])
    assert client.get(f"/v1/releases/{rollout['v2']}", headers=auth).json()["state"] == "active"


def test_one_device_is_one_vote(
    client: TestClient, auth: dict[str, str], enrollment_token: str, rollout: dict[str, int]
) -> None:
    """A single (possibly malicious) device repeating failures cannot halt a rollout."""
    tokens = [register(client, enrollment_token, f"dev-{i:02d}") for i in range(21)]
    for i in range(20):
        report(client, tokens[i], f"dev-{i:02d}", [event("installed", version=2)])
    flood = [event("golden_failed", version=2, reason="golden_mismatch") for _ in range(200)]
    assert report(client, tokens[20], "dev-20", flood)["accepted"] == 200
    status = client.get(f"/v1/releases/{rollout['v2']}/status", headers=auth).json()
    assert (status["reporting_devices"], status["failing_devices"]) == (21, 1)
    assert status["release"]["state"] == "active"
