"""Phased ramps (sync_service/phases.py) against the real service on SQLite and PostgreSQL:
a phase advances only after its hold and its judgement, each step signs an index the
device reads and is audited; a gate that waits holds the ramp, a breach stops it; the
service's own loop advances a short ramp."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from packager.manifest import parse_time
from sync_service import phases
from sync_service.api.deps import get_signer
from sync_service.core.config import Settings
from sync_service.index import cache_for
from tests.sync_service.fleet_helpers import bearer, publish, register

RAMP = [{"percent": 10, "hold_s": 60}, {"percent": 50, "hold_s": 120}, {"percent": 100, "hold_s": 60}]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"phase_interval_s": 0.2})


@pytest.fixture
def published(
    client: TestClient, auth: dict[str, str], fleet: str, bundle_factory: Callable[..., Path]
) -> None:
    for v in (1, 2):
        publish(client, auth, bundle_factory(version=v, seed=v))


def _create(client: TestClient, auth: dict[str, str], **extra: Any) -> Any:
    body = {"fleet": "field", "channel": "stable", "model": "demo", "version": 2, "percent": 10, **extra}
    return client.post("/v1/releases", json=body, headers=auth)


def _step(app: FastAPI, at: Any) -> list[dict[str, Any]]:
    with Session(app.state.engine) as session:
        return phases.advance(session, get_signer(app.state.keys, app.state.settings), app.state.storage, at,
                              forget=cache_for(app.state).forget_channel)


def _entry(client: TestClient, device: str) -> float:
    index = client.get("/v1/channels/stable/index", headers=bearer(device)).json()["signed"]
    percent: float = index["models"]["demo"][0]["rollout"]["percent"]
    return percent


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"phases": [{"percent": 10, "hold_s": 60}, {"percent": 5, "hold_s": 60}]}, "rise strictly"),
        ({"phases": [{"percent": 10, "hold_s": 60}]}, "at least 2"),
        ({"phases": [{"percent": 20, "hold_s": 60}, {"percent": 50, "hold_s": 60}]}, "not the first phase"),
        ({"phases": [{"percent": 10, "hold_s": 0}, {"percent": 50, "hold_s": 60}]}, "greater than or equal"),
        ({"phases": [{"percent": 10, "hold_s": 60}, {"percent": 150, "hold_s": 60}]}, "less than or equal"),
        ({"phases": [{"percent": 10, "hold": 60}, {"percent": 50}]}, "Extra inputs"),
    ],
)
def test_bad_schedules_are_refused(
    client: TestClient, auth: dict[str, str], published: None, extra: dict[str, Any], why: str
) -> None:
    r = _create(client, auth, **extra)
    assert r.status_code == 422 and why in r.text, r.text
    assert client.get("/v1/releases", headers=auth).json() == []


def test_a_phase_advances_only_after_its_hold(
    client: TestClient, app: FastAPI, auth: dict[str, str], published: None, enrollment_token: str
) -> None:
    device = register(client, enrollment_token, "dev-1")
    # the steps below are taken at given moments; the service's own loop (every 0.2 s here)
    # cannot move a 60 s hold during the test
    rel = _create(client, auth, phases=RAMP).json()
    schedule = rel["schedule"]
    assert (schedule["phase"], schedule["of"], schedule["next_percent"]) == (1, 3, 50)
    start = parse_time(schedule["since"][:19] + "Z")

    assert _step(app, start + timedelta(seconds=59)) == []  # held: not a second early
    assert _entry(client, device) == 10
    moved = _step(app, start + timedelta(seconds=61))
    assert [(m["from"], m["to"], m["phase"]) for m in moved] == [(10, 50, 2)]
    assert _entry(client, device) == 50
    second = start + timedelta(seconds=61)
    assert _step(app, second + timedelta(seconds=119)) == []  # phase 2 holds 120 s
    assert [m["to"] for m in _step(app, second + timedelta(seconds=121))] == [100]
    assert _entry(client, device) == 100
    assert _step(app, second + timedelta(days=30)) == []  # the last phase: done

    after = client.get(f"/v1/releases/{rel['id']}", headers=auth).json()
    assert after["percent"] == 100 and after["schedule"]["done"] and after["schedule"]["phase"] == 3
    log = client.get("/v1/audit", params={"release": rel["id"]}, headers=auth).json()
    assert [(e["action"], e["actor"], e["detail"].get("to")) for e in log[:2]] == [
        ("set_percent", "phase-schedule", 100), ("set_percent", "phase-schedule", 50)]


def test_a_gate_that_waits_holds_the_ramp(
    client: TestClient, app: FastAPI, auth: dict[str, str], published: None
) -> None:
    gate = {"max_rate_ratio": 2, "max_psi": 0.25, "min_devices": 5, "min_rows": 100}
    rel = _create(client, auth, phases=RAMP, behaviour_gate=gate).json()
    start = parse_time(rel["schedule"]["since"][:19] + "Z")
    held = _step(app, start + timedelta(seconds=61))
    # no device has reported (and these test manifests carry no reference profile): no evidence
    assert len(held) == 1 and held[0]["held"].startswith("waiting: ")
    assert client.get(f"/v1/releases/{rel['id']}", headers=auth).json()["percent"] == 10


def test_a_halted_release_never_advances(
    client: TestClient, app: FastAPI, auth: dict[str, str], published: None
) -> None:
    rel = _create(client, auth, phases=RAMP).json()
    assert client.post(f"/v1/releases/{rel['id']}/halt", json={"reason": "stop"}, headers=auth).is_success
    start = parse_time(rel["schedule"]["since"][:19] + "Z")
    assert _step(app, start + timedelta(days=1)) == []
    assert client.get(f"/v1/releases/{rel['id']}", headers=auth).json()["percent"] == 10


def test_the_service_advances_a_short_ramp_by_itself(
    client: TestClient, auth: dict[str, str], published: None, enrollment_token: str
) -> None:
    device = register(client, enrollment_token, "dev-1")
    ramp = [{"percent": 10, "hold_s": 1}, {"percent": 100, "hold_s": 1}]
    rel = _create(client, auth, phases=ramp).json()
    deadline = time.monotonic() + 60
    while _entry(client, device) != 100:
        assert time.monotonic() < deadline, "the service's loop did not step the ramp"
        time.sleep(0.2)
    status = client.get(f"/v1/releases/{rel['id']}/status", headers=auth).json()
    assert status["release"]["schedule"]["done"] and status["release"]["percent"] == 100


def test_cli_creates_a_phased_release_and_status_shows_the_phase(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], live_server: str,
    publisher_token: str, published: None, tmp_path: Path,
) -> None:
    import argparse
    import json

    from packager.cli import main
    from sync_service.cli_release import _phases

    assert _phases("5:1h,25:30m,100") == [
        {"percent": 5.0, "hold_s": 3600}, {"percent": 25.0, "hold_s": 1800}, {"percent": 100.0, "hold_s": 60}]
    for bad in ("5", "x:1h,100", "5:1y,100"):
        with pytest.raises(argparse.ArgumentTypeError):
            _phases(bad)
    monkeypatch.setenv("MODELSYNC_TOKEN", publisher_token)
    monkeypatch.setenv("MODELSYNC_SERVER", live_server)
    monkeypatch.setenv("MODELSYNC_CONFIG", str(tmp_path / "absent.toml"))
    assert main(["release", "create", "--fleet", "field", "--model", "demo", "--version", "1",
                 "--phases", "5:1h,100", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["percent"] == 5 and created["schedule"]["of"] == 2
    assert main(["release", "status", str(created["id"])]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 (5% → 100%)" in out and "100% judged at" in out
