"""Transport failures do not count toward the health gate (docs/protocol.md "Health gate",
docs/security.md "A path attacker halting a rollout"): bytes cut or spoilt on the way say
nothing about the model, and anyone on the path can cause them without a key."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.sync_service.fleet_helpers import event, register, report
from tests.sync_service.test_health_gate import rollout

__all__ = ["rollout"]  # the fixture: v1 at 100%, v2 at 50%


def test_transport_failures_neither_halt_nor_dilute_the_gate(
    client: TestClient, auth: dict[str, str], enrollment_token: str, rollout: dict[str, int]
) -> None:
    tokens = [register(client, enrollment_token, f"dev-{i:02d}") for i in range(45)]
    # 25 devices behind a path attacker: 20 new clients report transfer_failed, 5 older
    # ones the same failures as install_failed with a transport reason.
    legacy = ["hash_mismatch", "length_mismatch", "download", "slow_retrieval", "hash_mismatch"]
    for i in range(25):
        kind, reason = ("transfer_failed", "hash_mismatch") if i < 20 else ("install_failed", legacy[i - 20])
        accepted = report(client, tokens[i], f"dev-{i:02d}", [event(kind, version=2, reason=reason)])
        assert accepted["accepted"] == 1
    status = client.get(f"/v1/releases/{rollout['v2']}/status", headers=auth).json()
    assert status["release"]["state"] == "active"
    assert (status["reporting_devices"], status["failing_devices"]) == (0, 0)
    # and the gate still judges the verified outcomes: 19 installs and 1 golden-vector
    # failure are 1 of 20 reporting devices (5%), which halts
    for i in range(25, 44):
        report(client, tokens[i], f"dev-{i:02d}", [event("installed", version=2)])
    assert client.get(f"/v1/releases/{rollout['v2']}", headers=auth).json()["state"] == "active"
    report(client, tokens[44], "dev-44", [event("golden_failed", version=2, reason="golden_vector")])
    status = client.get(f"/v1/releases/{rollout['v2']}/status", headers=auth).json()
    assert status["release"]["state"] == "halted"
    assert (status["reporting_devices"], status["failing_devices"]) == (20, 1)
