"""Device registration and report batches: tokens, fleets, idempotency under retries."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from sync_service import crud
from sync_service.models import ApiToken, Device, DeviceEvent
from tests.sync_service.fleet_helpers import bearer, event, get_index, register, report


def _register_body(device_id: str = "dev-1", **kw: Any) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "platform": "android",
        "app_version": "2.1.0",
        "ort_version": "1.24.3",
        "providers": ["NnapiExecutionProvider", "CPUExecutionProvider"],
        **kw,
    }


def _events(app: FastAPI) -> int:
    with Session(app.state.engine) as session:
        return int(session.exec(select(func.count()).select_from(DeviceEvent)).one())


def test_register_returns_a_device_token_and_stores_the_device(
    client: TestClient, app: FastAPI, fleet: str, enrollment_token: str
) -> None:
    r = client.post("/v1/devices/register", json=_register_body(), headers=bearer(enrollment_token))
    assert r.status_code == 201
    body = r.json()
    assert (body["fleet"], body["device_id"]) == ("field", "dev-1")
    assert body["device_token"].startswith("msd_")
    with Session(app.state.engine) as session:
        device = session.get(Device, "dev-1")
        assert device is not None
        assert (device.platform, device.ort_version) == ("android", "1.24.3")
        assert device.providers == "NnapiExecutionProvider,CPUExecutionProvider"
        row = crud.get_token(session=session, plain=body["device_token"])
        assert row is not None and (row.kind, row.device_id) == ("device", "dev-1")


def test_reregistering_revokes_the_old_token(
    client: TestClient, app: FastAPI, fleet: str, enrollment_token: str
) -> None:
    old = register(client, enrollment_token, "dev-1")
    new = register(client, enrollment_token, "dev-1")
    assert report(client, new, "dev-1", [event("stale_index")]) == {"accepted": 1, "duplicates": 0}
    r = client.post("/v1/devices/dev-1/reports", json={"events": []}, headers=bearer(old))
    assert r.status_code == 401
    with Session(app.state.engine) as session:
        live = session.exec(
            select(func.count())
            .select_from(ApiToken)
            .where(
                ApiToken.device_id == "dev-1",
                ApiToken.revoked_at == None,  # noqa: E711
            )
        ).one()
    assert live == 1


def test_register_needs_an_enrollment_token(
    client: TestClient, fleet: str, auth: dict[str, str], enrollment_token: str
) -> None:
    assert client.post("/v1/devices/register", json=_register_body()).status_code == 401
    r = client.post("/v1/devices/register", json=_register_body(), headers=auth)
    assert (r.status_code, r.json()["code"]) == (403, "wrong_token_kind")
    device = register(client, enrollment_token, "dev-1")
    assert (
        client.post("/v1/devices/register", json=_register_body("dev-2"), headers=bearer(device)).status_code
        == 403
    )


def test_a_device_of_one_fleet_cannot_be_taken_over_from_another(
    client: TestClient, app: FastAPI, fleet: str, enrollment_token: str, make_token: Callable[..., str]
) -> None:
    token = register(client, enrollment_token, "dev-1")
    with Session(app.state.engine) as session:
        crud.create_fleet(session=session, name="other")
        session.commit()
    r = client.post(
        "/v1/devices/register", json=_register_body(), headers=bearer(make_token("enrollment", fleet="other"))
    )
    assert (r.status_code, r.json()["code"]) == (409, "device_in_other_fleet")
    assert get_index(client, token).status_code == 200  # the original token still works


@pytest.mark.parametrize(
    "override",
    [
        {"platform": "windows"},
        {"device_id": ""},
        {"device_id": "../etc"},
        {"device_id": "x" * 129},
        {"providers": ["p"] * 17},
        {"extra": 1},
    ],
)
def test_register_validation(
    client: TestClient, fleet: str, enrollment_token: str, override: dict[str, Any]
) -> None:
    r = client.post("/v1/devices/register", json=_register_body(**override), headers=bearer(enrollment_token))
    assert (r.status_code, r.json()["code"]) == (422, "validation_error")


def test_reports_are_idempotent_by_event_id(
    client: TestClient, app: FastAPI, fleet: str, enrollment_token: str
) -> None:
    token = register(client, enrollment_token, "dev-1")
    batch = [event("installed"), event("inference_stats", reason=None), event("golden_failed", reason="x")]
    batch[1]["data"] = {"p50_ms": 0.4, "rows": 1200}
    assert report(client, token, "dev-1", batch) == {"accepted": 3, "duplicates": 0}
    assert report(client, token, "dev-1", batch) == {"accepted": 0, "duplicates": 3}
    # Same ids spelled differently (upper case, no hyphens) are the same events.
    respelled = [{**e, "event_id": e["event_id"].upper().replace("-", "")} for e in batch]
    assert report(client, token, "dev-1", [*respelled, event("stale_index")]) == {
        "accepted": 1,
        "duplicates": 3,
    }
    inside = event("installed")
    assert report(client, token, "dev-1", [inside, inside]) == {"accepted": 1, "duplicates": 1}
    assert _events(app) == 5


def test_concurrent_retries_store_each_event_once(
    live_server: str, app: FastAPI, fleet: str, enrollment_token: str
) -> None:
    with httpx.Client(base_url=live_server, timeout=30) as http:
        token = register(http, enrollment_token, "dev-1")
    batch = [event("installed") for _ in range(50)]
    answers: list[dict[str, Any]] = []
    barrier = threading.Barrier(6)

    def send() -> None:
        with httpx.Client(base_url=live_server, timeout=30) as http:
            barrier.wait()
            answers.append(report(http, token, "dev-1", batch))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(a["accepted"] for a in answers) == 50
    assert sum(a["duplicates"] for a in answers) == 250
    assert _events(app) == 50


def test_report_limits_and_validation(client: TestClient, fleet: str, enrollment_token: str) -> None:
    token = register(client, enrollment_token, "dev-1")
    too_many = [event("stale_index") for _ in range(501)]
    r = client.post("/v1/devices/dev-1/reports", json={"events": too_many}, headers=bearer(token))
    assert (r.status_code, r.json()["code"]) == (422, "validation_error")
    assert report(client, token, "dev-1", too_many[:500]) == {"accepted": 500, "duplicates": 0}
    for bad in (
        {**event("installed"), "kind": "exploded"},
        {**event("installed"), "event_id": "not-a-uuid"},
        {**event("installed"), "at": "yesterday"},
        {**event("installed"), "version": 0},
    ):
        r = client.post("/v1/devices/dev-1/reports", json={"events": [bad]}, headers=bearer(token))
        assert r.status_code == 422, bad
    r = client.post(
        "/v1/devices/dev-1/reports",
        content=b"{not json",
        headers={**bearer(token), "Content-Type": "application/json"},
    )
    assert r.status_code == 422


def test_a_device_posts_only_its_own_reports(
    client: TestClient, app: FastAPI, fleet: str, enrollment_token: str, auth: dict[str, str]
) -> None:
    mine = register(client, enrollment_token, "dev-1")
    register(client, enrollment_token, "dev-2")
    r = client.post("/v1/devices/dev-2/reports", json={"events": [event("installed")]}, headers=bearer(mine))
    assert (r.status_code, r.json()["code"]) == (403, "wrong_device")
    r = client.post("/v1/devices/dev-2/reports", json={"events": [event("installed")]}, headers=auth)
    assert r.status_code == 403
    assert _events(app) == 0


def test_reports_update_last_seen(
    client: TestClient, app: FastAPI, fleet: str, enrollment_token: str
) -> None:
    token = register(client, enrollment_token, "dev-1")
    with Session(app.state.engine) as session:
        device = session.get(Device, "dev-1")
        assert device is not None
        device.last_seen_at = datetime.now(UTC) - timedelta(days=3)
        session.add(device)
        session.commit()
    report(client, token, "dev-1", [event("stale_index", model=None, version=None)])
    with Session(app.state.engine) as session:
        device = session.get(Device, "dev-1")
        assert device is not None
        assert datetime.now(UTC) - device.last_seen_at < timedelta(minutes=1)
        stored = session.exec(select(DeviceEvent)).one()
    assert (stored.kind, stored.model_name, stored.device_id) == ("stale_index", None, "dev-1")
    assert uuid.UUID(stored.event_id)


def test_concurrent_registrations_of_one_device_leave_one_live_token(
    live_server: str, app: FastAPI, fleet: str, enrollment_token: str
) -> None:
    barrier = threading.Barrier(5)
    tokens: list[str] = []

    def enroll() -> None:
        with httpx.Client(base_url=live_server, timeout=30) as http:
            barrier.wait()
            tokens.append(register(http, enrollment_token, "dev-1"))

    threads = [threading.Thread(target=enroll) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(tokens) == 5
    with httpx.Client(base_url=live_server, timeout=30) as http:
        live = [t for t in tokens if get_index(http, t).status_code == 200]
    assert len(live) == 1
    with Session(app.state.engine) as session:
        assert session.exec(select(func.count()).select_from(Device)).one() == 1
