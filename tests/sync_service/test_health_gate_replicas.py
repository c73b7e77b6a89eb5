"""The health gate across replicas (issue 8, item 8): two apps on one database, each a real
server on loopback, receive the failure reports that cross the threshold at the same
moment. Judged concurrently, each batch counted only its own uncommitted failures, and the
release stayed active in some tries; serialized per release, the last batch sees them all
and halts it, every time. On SQLite too (two apps on one file)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sync_service.core.config import Settings
from sync_service.main import create_app
from tests.sync_service.fleet_helpers import bearer, create_release, event, publish, register
from tests.sync_service.live import serve_in_thread

DEVICES = 6  # every one of them reports a failure in the crossing batch
TRIALS = 10


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Judged only once all six have reported (min_devices), and then halted (6 of 6 failing).
    return settings.model_copy(update={"health_min_devices": DEVICES, "health_failure_rate": 0.5})


@pytest.fixture
def replicas(app: FastAPI, settings: Settings) -> Iterator[tuple[str, str]]:
    other = create_app(settings)
    try:
        with serve_in_thread(app) as first, serve_in_thread(other) as second:
            yield first, second
    finally:
        other.state.engine.dispose()


def test_concurrent_crossing_reports_halt_at_once_through_two_replicas(
    client: TestClient,
    auth: dict[str, str],
    enrollment_token: str,
    bundle_factory: Callable[..., Path],
    replicas: tuple[str, str],
) -> None:
    devices = [(f"rep-{i}", register(client, enrollment_token, f"rep-{i}")) for i in range(DEVICES)]
    https = [httpx.Client(base_url=base, timeout=60) for base in replicas]
    missed: list[int] = []
    try:
        for trial in range(TRIALS):
            model = f"gate{trial}"
            publish(client, auth, bundle_factory(name=model, version=1, seed=trial))
            release = create_release(client, auth, model=model, version=1, percent=100)
            barrier = threading.Barrier(DEVICES)

            def send(i: int, model: str = model, barrier: threading.Barrier = barrier) -> int:
                device_id, token = devices[i]
                body = {"events": [event("install_failed", model=model, version=1, reason="load_error")]}
                http = https[i % 2]  # half through each replica
                barrier.wait(timeout=60)
                return http.post(
                    f"/v1/devices/{device_id}/reports", json=body, headers=bearer(token)
                ).status_code

            with ThreadPoolExecutor(DEVICES) as pool:
                codes = list(pool.map(send, range(DEVICES)))
            assert codes == [200] * DEVICES
            state = client.get(f"/v1/releases/{release['id']}", headers=auth).json()
            if state["state"] != "halted":
                missed.append(trial)
            else:
                assert state["halted_by_health_gate"] is True
                assert (
                    state["halt_reason"] == "health gate: 6 of 6 reporting devices failed (100.0% >= 50.0%)"
                )
    finally:
        for http in https:
            http.close()
    assert missed == [], f"active after the crossing batch in trials {missed} of {TRIALS}"
