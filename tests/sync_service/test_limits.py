"""Every documented maximum fits every backend (issue 8, item 6): SQLite does not enforce
column lengths, PostgreSQL does, so these run on both (the conftest's db_template), each
input at its limit and one past it. And numbers are numbers: no ``false`` for 0%."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from sync_service.models import ApiToken
from tests.sync_service.fleet_helpers import bearer, create_release, event, get_index, publish, report

NAME_64 = "n" + "a" * 63  # fleet, channel and model names: ^[a-z0-9][a-z0-9._-]{0,63}$
DEVICE_128 = "D" + "e" * 126 + "9"  # ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$
MAX_VERSION = 2**31 - 1
# 16 providers (the most allowed), 512 characters in all with the commas: the column's size.
PROVIDERS_512 = [f"{i:02d}" + "P" * 30 for i in range(15)] + ["Q" * 17]


def registration(device_id: str = DEVICE_128, **over: Any) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "platform": "linux",
        "app_version": "a" * 32,
        "ort_version": "o" * 32,
        "providers": PROVIDERS_512,
        **over,
    }


@pytest.fixture
def admin_fleet(client: TestClient, auth: dict[str, str]) -> str:
    """A fleet and a second channel, both named at the 64-character maximum."""
    r = client.post("/v1/admin/fleets", json={"name": NAME_64}, headers=auth)
    assert r.status_code == 201, r.text
    r = client.post(f"/v1/admin/fleets/{NAME_64}/channels", json={"name": NAME_64}, headers=auth)
    assert r.status_code == 201, r.text
    assert r.json()["channels"] == sorted(["stable", NAME_64]) or NAME_64 in r.json()["channels"]
    return NAME_64


@pytest.fixture
def enrollment(client: TestClient, auth: dict[str, str], admin_fleet: str) -> str:
    r = client.post(
        "/v1/admin/tokens",
        json={"kind": "enrollment", "fleet": admin_fleet, "name": "e" * 128},
        headers=auth,
    )
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "e" * 128
    token: str = r.json()["token"]
    return token


def test_registration_at_every_maximum(
    app: FastAPI, client: TestClient, enrollment: str, admin_fleet: str
) -> None:
    assert sum(map(len, PROVIDERS_512)) + 15 == 512 and len(DEVICE_128) == 128
    first = client.post("/v1/devices/register", json=registration(), headers=bearer(enrollment))
    assert first.status_code == 201, first.text
    assert first.json()["device_id"] == DEVICE_128
    again = client.post("/v1/devices/register", json=registration(), headers=bearer(enrollment))
    assert again.status_code == 201, again.text
    token = again.json()["device_token"]
    assert get_index(client, token, NAME_64).status_code == 200
    assert get_index(client, first.json()["device_token"]).status_code == 401  # revoked
    with Session(app.state.engine) as s:
        names = {t.name for t in s.exec(select(ApiToken).where(ApiToken.device_id == DEVICE_128))}
    assert len(names) == 1 and all(len(n) <= 128 and n.startswith("device ") for n in names)
    batch = [event("install_failed", model=NAME_64, version=MAX_VERSION, reason="r" * 256)]
    assert report(client, token, DEVICE_128, batch) == {"accepted": 1, "duplicates": 0}


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"device_id": DEVICE_128 + "x"}, "device_id"),
        ({"app_version": "a" * 33}, "app_version"),
        ({"providers": [*PROVIDERS_512[:-1], "Q" * 18]}, "providers"),  # 513 in all
        ({"providers": ["p" * 65]}, "providers"),
        ({"providers": ["p"] * 17}, "providers"),
    ],
)
def test_registration_past_a_maximum_is_422(
    client: TestClient, enrollment: str, over: dict[str, Any], field: str
) -> None:
    r = client.post("/v1/devices/register", json=registration(**over), headers=bearer(enrollment))
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "validation_error" and field in r.json()["detail"]


def test_release_at_every_maximum(
    client: TestClient, auth: dict[str, str], admin_fleet: str, bundle_factory: Callable[..., Path]
) -> None:
    publish(client, auth, bundle_factory(name=NAME_64, version=MAX_VERSION))
    rel = create_release(
        client,
        auth,
        model=NAME_64,
        version=MAX_VERSION,
        fleet=NAME_64,
        channel=NAME_64,
        percent=100,
        urgent=True,
    )
    assert (rel["fleet"], rel["channel"], rel["model"], rel["version"]) == (
        NAME_64,
        NAME_64,
        NAME_64,
        MAX_VERSION,
    )
    patched = client.patch(f"/v1/releases/{rel['id']}", json={"percent": 100.0}, headers=auth)
    assert patched.status_code == 200, patched.text
    halted = client.post(f"/v1/releases/{rel['id']}/halt", json={"reason": "h" * 1000}, headers=auth)
    assert halted.status_code == 200, halted.text
    assert halted.json()["halt_reason"] == "h" * 1000
    listed = client.get("/v1/releases", params={"fleet": NAME_64, "channel": NAME_64}, headers=auth)
    assert [r["id"] for r in listed.json()] == [rel["id"]]
    assert client.get(f"/v1/releases/{rel['id']}/status", headers=auth).status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/admin/fleets", {"name": NAME_64 + "a"}),
        ("/v1/admin/tokens", {"kind": "publisher", "scopes": ["publish"], "name": "t" * 129}),
        ("/v1/admin/tokens", {"kind": "publisher", "scopes": ["publish"], "name": "nul\x00"}),
        ("/v1/admin/tokens", {"kind": "enrollment", "fleet": "f\x00"}),
        ("/v1/admin/tokens", {"kind": "enrollment", "fleet": "f" * 65}),
        (f"/v1/admin/fleets/{'f' * 65}/channels", {"name": "beta"}),
        ("/v1/admin/fleets/f%00/channels", {"name": "beta"}),
    ],
)
def test_admin_inputs_past_a_maximum_are_422(
    client: TestClient, auth: dict[str, str], path: str, body: dict[str, Any]
) -> None:
    r = client.post(path, json=body, headers=auth)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "validation_error"


@pytest.mark.parametrize(
    "bad",
    [{"percent": False}, {"percent": True}, {"percent": "50"}, {"percent": None}, {"percent": "NaN"}],
)
def test_percent_must_be_a_number(
    client: TestClient,
    auth: dict[str, str],
    fleet: str,
    bundle_factory: Callable[..., Path],
    bad: dict[str, Any],
) -> None:
    publish(client, auth, bundle_factory())
    rel = create_release(client, auth, percent=40)
    r = client.patch(f"/v1/releases/{rel['id']}", json=bad, headers=auth)
    assert r.status_code == 422, r.text
    assert client.get(f"/v1/releases/{rel['id']}", headers=auth).json()["percent"] == 40
    assert (
        client.patch(f"/v1/releases/{rel['id']}", json={"percent": 50}, headers=auth).json()["percent"] == 50
    )


@pytest.mark.parametrize(
    "over",
    [
        {"percent": False},
        {"version": True},
        {"version": "1"},
        {"urgent": "yes"},
        {"urgent": 1},
    ],
)
def test_release_fields_are_strict(
    client: TestClient,
    auth: dict[str, str],
    fleet: str,
    bundle_factory: Callable[..., Path],
    over: dict[str, Any],
) -> None:
    publish(client, auth, bundle_factory())
    body = {"fleet": fleet, "channel": "stable", "model": "demo", "version": 1, "percent": 10, **over}
    r = client.post("/v1/releases", json=body, headers=auth)
    assert r.status_code == 422, r.text


def test_report_numbers_are_strict(client: TestClient, enrollment: str) -> None:
    token = client.post("/v1/devices/register", json=registration("d1"), headers=bearer(enrollment)).json()[
        "device_token"
    ]
    for version in (True, "1"):  # 1.0 is a JSON integer (JSON Schema's reading): accepted
        r = client.post(
            "/v1/devices/d1/reports",
            json={"events": [{**event("installed"), "version": version}]},
            headers=bearer(token),
        )
        assert r.status_code == 422, (version, r.text)
