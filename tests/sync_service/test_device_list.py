"""GET /v1/devices as the console's device list: search, pages, and each device's newest
install, failure and stale index, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from sync_service.models import Device
from tests.sync_service.fleet_helpers import event, publish, register, report


def _at(event_: dict[str, Any], minutes: int) -> dict[str, Any]:
    event_["at"] = (datetime(2026, 12, 1, tzinfo=UTC) + timedelta(minutes=minutes)).isoformat()
    return event_


@pytest.fixture
def reported(
    client: TestClient, auth: dict[str, str], bundle_factory: Callable[..., Path], enrollment_token: str
) -> dict[str, str]:
    publish(client, auth, bundle_factory(version=1, seed=1))
    tokens = {d: register(client, enrollment_token, d) for d in ("north_1", "north-1", "south-7", "west-2")}
    report(client, tokens["north_1"], "north_1", [
        _at(event("installed", version=1), 1),
        _at(event("install_failed", version=2, reason="sha256_mismatch"), 2),
    ])
    report(client, tokens["north-1"], "north-1", [
        _at(event("installed", version=1), 1), _at(event("stale_index", model=None, version=None), 5),
    ])
    report(client, tokens["south-7"], "south-7", [
        _at(event("stale_index", model=None, version=None), 1), _at(event("installed", version=1), 5),
        _at(event("installed", model=None, version=None), 6),
    ])
    return tokens


def test_each_device_shows_its_newest_install_failure_and_stale_index(
    client: TestClient, auth: dict[str, str], reported: dict[str, str]
) -> None:
    rows = {d["device_id"]: d for d in client.get("/v1/devices", headers=auth).json()}
    assert rows["north_1"]["models"] == {"demo": 1}
    assert rows["north_1"]["last_failure"] == "sha256_mismatch"
    assert rows["north_1"]["last_failure_at"] == "2026-12-01T00:02:00Z"
    assert rows["north-1"]["stale_index"] is True  # stale after its install
    assert rows["south-7"]["stale_index"] is False  # installed after a fresh index
    assert rows["south-7"]["last_failure"] is None  # an install report naming no model is no failure
    assert rows["west-2"]["models"] == {} and rows["west-2"]["last_failure"] is None


def test_search_is_literal_and_pages_walk_every_device(
    client: TestClient, app: FastAPI, auth: dict[str, str], reported: dict[str, str], fleet_row: Any
) -> None:
    # "_" is a LIKE wildcard: the search must match it literally
    assert [d["device_id"] for d in client.get("/v1/devices?q=h_1", headers=auth).json()] == ["north_1"]
    assert [d["device_id"] for d in client.get("/v1/devices?q=orth", headers=auth).json()] == [
        "north-1", "north_1",
    ]
    with Session(app.state.engine) as session:
        for i in range(250):
            session.add(Device(id=f"bulk-{i:04d}", fleet_id=fleet_row.id, platform="android"))
        session.commit()
    everything = [d["device_id"] for d in client.get("/v1/devices", headers=auth).json()]
    assert len(everything) == 254 and everything == sorted(everything)
    walked: list[str] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 40, **({"after": after} if after else {})}
        page = [d["device_id"] for d in client.get("/v1/devices", params=params, headers=auth).json()]
        if not page:
            break
        walked += page
        after = page[-1]
    assert walked == everything


@pytest.mark.parametrize(
    "params",
    [{"q": "<script>"}, {"q": "50%"}, {"q": ""}, {"after": "x" * 129}, {"limit": 0}, {"limit": 10_001}],
)
def test_bad_list_requests_are_422(client: TestClient, auth: dict[str, str], params: dict[str, Any]) -> None:
    r = client.get("/v1/devices", params=params, headers=auth)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "validation_error"


def test_one_devices_history_pages_newest_first(
    client: TestClient, auth: dict[str, str], reported: dict[str, str], enrollment_token: str
) -> None:
    sent = [event("installed", version=v) for v in range(1, 8)]
    for e in sent:  # one report each: each has its own receive time, in this order
        report(client, reported["west-2"], "west-2", [e])
    walked: list[str] = []
    before: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"before": before} if before else {})}
        r = client.get("/v1/devices/west-2/history", params=params, headers=auth)
        assert r.status_code == 200, r.text
        if not r.json():
            break
        walked += [e["event_id"] for e in r.json()]
        before = walked[-1]
    # the service keeps a report's UUID in its canonical hex form
    assert walked == [uuid.UUID(e["event_id"]).hex for e in reversed(sent)]
    first = client.get("/v1/devices/north_1/history", headers=auth).json()
    assert {(e["kind"], e["version"], e["reason"]) for e in first} == {
        ("installed", 1, None), ("install_failed", 2, "sha256_mismatch"),
    }
    assert all(e["at"].endswith("Z") and e["received"].endswith("Z") for e in first)
    # another device's report is not a page mark for this one
    other = client.get("/v1/devices/north_1/history", params={"before": walked[0]}, headers=auth)
    assert (other.status_code, other.json()["code"]) == (404, "report_not_found")
    nobody = client.get("/v1/devices/nobody/history", headers=auth)
    assert (nobody.status_code, nobody.json()["code"]) == (404, "device_not_found")
    assert client.get("/v1/devices/west-2/history", params={"limit": 0}, headers=auth).status_code == 422
