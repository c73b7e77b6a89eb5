"""The audit log (GET /v1/audit) and a release's adoption over time
(GET /v1/releases/{id}/adoption), against the real service on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sync_service.core.config import Settings
from sync_service.crud_releases import devices_in_rollout
from tests.sync_service.fleet_helpers import bearer, create_release, event, publish, register, report


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # a gate that judges after two reporting devices, so one test can make it halt
    return settings.model_copy(update={"health_min_devices": 2, "health_failure_rate": 0.9})


@pytest.fixture
def published(client: TestClient, auth: dict[str, str], bundle_factory: Callable[..., Path]) -> None:
    for v in (1, 2):
        publish(client, auth, bundle_factory(version=v, seed=v))


def _index_version(client: TestClient, device_token: str) -> int:
    r = client.get("/v1/channels/stable/index", headers=bearer(device_token))
    assert r.status_code == 200, r.text
    version: int = r.json()["signed"]["version"]
    return version


def test_every_change_is_recorded_with_its_token_and_index_version(
    client: TestClient, make_token: Callable[..., str], published: None, enrollment_token: str
) -> None:
    alice = bearer(make_token(name="alice"))
    bob = bearer(make_token(name="bob", scopes=("release",)))
    device = register(client, enrollment_token, "dev-1")
    rel = create_release(client, alice, version=1, percent=10)
    created_index = _index_version(client, device)
    assert client.patch(f"/v1/releases/{rel['id']}", json={"percent": 40}, headers=bob).status_code == 200
    assert client.post(f"/v1/releases/{rel['id']}/halt", json={"reason": "too hot"}, headers=alice).is_success
    # halting a halted release changes nothing, so it records nothing
    assert client.post(f"/v1/releases/{rel['id']}/halt", json={"reason": "again"}, headers=alice).is_success
    assert client.post(f"/v1/releases/{rel['id']}/resume", headers=bob).is_success
    final_index = _index_version(client, device)

    r = client.get("/v1/audit", headers=alice)
    assert r.status_code == 200, r.text
    events = r.json()
    assert [(e["action"], e["actor"]) for e in events] == [
        ("resume", "bob"), ("halt", "alice"), ("set_percent", "bob"), ("create", "alice"),
    ]
    assert [e["index_version"] for e in events] == list(range(final_index, created_index - 1, -1))
    assert events[0]["index_version"] == final_index
    assert events[1]["detail"] == {"reason": "too hot", "by_health_gate": False}
    assert events[2]["detail"] == {"from": 10.0, "to": 40.0}
    assert events[3]["detail"] == {"percent": 10.0, "urgent": False}
    assert {e["release_id"] for e in events} == {rel["id"]}
    where = {(e["fleet"], e["channel"], e["model"], e["version"]) for e in events}
    assert where == {("field", "stable", "demo", 1)}
    assert len({e["actor_token_id"] for e in events}) == 2

    # paging back and filters
    older = client.get("/v1/audit", params={"before": events[1]["id"], "limit": 1}, headers=alice).json()
    assert [e["action"] for e in older] == ["set_percent"]
    assert client.get("/v1/audit", params={"release": rel["id"] + 1}, headers=alice).json() == []
    assert client.get("/v1/audit", params={"fleet": "other"}, headers=alice).json() == []


def test_a_refused_change_records_nothing(
    client: TestClient, auth: dict[str, str], published: None, fleet: str
) -> None:
    create_release(client, auth, version=2)
    create_release(client, auth, version=1, expect=409)  # versions only go up
    assert [e["action"] for e in client.get("/v1/audit", headers=auth).json()] == ["create"]


def test_the_health_gate_is_recorded_as_the_actor(
    client: TestClient, auth: dict[str, str], published: None, enrollment_token: str
) -> None:
    rel = create_release(client, auth, version=1)
    for i in range(2):
        token = register(client, enrollment_token, f"bad-{i}")
        report(client, token, f"bad-{i}", [event("golden_failed", version=1, reason="golden_mismatch")])
    halt = client.get("/v1/audit", headers=auth).json()[0]
    assert (halt["action"], halt["actor"], halt["actor_token_id"]) == ("halt", "health-gate", None)
    assert halt["release_id"] == rel["id"] and halt["detail"]["by_health_gate"] is True
    assert "2 of 2" in halt["detail"]["reason"]


@pytest.mark.parametrize(
    ("params", "headers_scopes", "status"),
    [
        ({"limit": 0}, ("release",), 422),
        ({"limit": 1001}, ("release",), 422),
        ({"fleet": "Bad Name"}, ("release",), 422),
        ({"before": 0}, ("release",), 422),
        ({}, ("read",), 200),  # any publisher token reads the log; only `release` changes releases
    ],
)
def test_bad_audit_requests(
    client: TestClient, make_token: Callable[..., str], params: dict[str, Any],
    headers_scopes: tuple[str, ...], status: int,
) -> None:
    r = client.get("/v1/audit", params=params, headers=bearer(make_token(scopes=headers_scopes)))
    assert r.status_code == status, r.text


def test_adoption_counts_devices_over_time(
    client: TestClient, auth: dict[str, str], published: None, enrollment_token: str
) -> None:
    rel = create_release(client, auth, version=1, percent=50)
    ids = [f"d-{i:02d}" for i in range(24)]
    tokens = {d: register(client, enrollment_token, d) for d in ids}
    inside = [d for d in ids if devices_in_rollout([d], salt=rel["salt"], percent=50)]
    assert len(inside) >= 4, "the seeded ids give a bucket with room for every outcome"
    installs, failing, retried = inside[0:2], inside[2], inside[3]
    for d in installs:
        report(client, tokens[d], d, [event("installed", version=1)])
    report(client, tokens[failing], failing, [event("install_failed", version=1, reason="sha256_mismatch")])
    report(client, tokens[retried], retried, [event("golden_failed", version=1, reason="golden_mismatch")])
    report(client, tokens[retried], retried, [event("installed", version=1)])  # the retry worked

    r = client.get(f"/v1/releases/{rel['id']}/adoption", params={"points": 5}, headers=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["devices_registered"], body["devices_in_rollout"]) == (24, len(inside))
    points = body["points"]
    assert len(points) == 5 and points == sorted(points, key=lambda p: p["at"])
    last = points[-1]
    assert last["installed"] == 3
    assert last["failed"] == {"sha256_mismatch": 1}
    assert last["pending"] == len(inside) - 4
    assert last["outside"] == 24 - len(inside)
    # the first moment is the release's creation, before any report
    assert points[0]["installed"] == 0 and points[0]["failed"] == {}
    # counts never fall over time for installs
    assert [p["installed"] for p in points] == sorted(p["installed"] for p in points)


@pytest.mark.parametrize(("points", "status"), [(0, 422), (501, 422), ("x", 422)])
def test_bad_adoption_requests(
    client: TestClient, auth: dict[str, str], published: None, fleet: str, points: Any, status: int
) -> None:
    rel = create_release(client, auth, version=1)
    r = client.get(f"/v1/releases/{rel['id']}/adoption", params={"points": points}, headers=auth)
    assert r.status_code == status, r.text
    assert client.get(f"/v1/releases/{rel['id'] + 99}/adoption", headers=auth).status_code == 404
