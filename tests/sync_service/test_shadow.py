"""Shadow releases against the real service on SQLite and PostgreSQL (sync_service/shadow.py,
docs/behaviour.md "Shadow runs"): the signed index lists a shadow apart from ``models``;
agreement reports add up to numbers computed here; the gate halts a candidate that disagrees
with the active model; promote keeps the salt and moves the entry; every malformed shadow
report or request is a precise 4xx with nothing stored."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from sync_service.models import DeviceEvent, Release
from tests.sync_service.bundle_factory import manifest_signed, tiny_onnx, write_bundle
from tests.sync_service.fleet_helpers import (
    bearer,
    create_release,
    event,
    publish,
    register,
    service_root,
    verified_index,
)


@pytest.fixture
def published(
    client: TestClient, auth: dict[str, str], fleet: str, tmp_path: Path,
    publisher_keys: list[Ed25519PrivateKey],
) -> None:
    for version in (1, 2, 3):
        data = tiny_onnx(version)
        signed = manifest_signed("demo", version, {"cpu": data})
        publish(client, auth, write_bundle(tmp_path / f"b{version}", signed, [data], publisher_keys))


def shadow_release(client: TestClient, auth: dict[str, str], version: int, percent: float = 100,
                   expect: int = 201, **extra: Any) -> Any:
    r = client.post("/v1/releases", headers=auth, json={
        "fleet": "field", "channel": "stable", "model": "demo", "version": version, "percent": percent,
        "mode": "shadow", **extra})
    assert r.status_code == expect, r.text
    return r.json()


def agreement(version: int, rows: int, agree: int, active: int, shadow: int, pairs: int,
              corr: float | None, active_version: int = 1, **extra: Any) -> dict[str, Any]:
    data = {"since": "2026-01-01T00:00:00Z", "active_version": active_version, "rows": rows, "agree": agree,
            "active_anomalies": active, "shadow_anomalies": shadow, "rank_pairs": pairs,
            "rank_correlation": corr, **extra}
    return {**event("shadow", version=version), "data": data}


def post(client: Any, token: str, device_id: str, events: list[dict[str, Any]]) -> Any:
    return client.post(f"/v1/devices/{device_id}/reports", json={"events": events}, headers=bearer(token))


def test_a_shadow_is_signed_apart_and_promote_keeps_its_salt(
    client: TestClient, auth: dict[str, str], published: None, enrollment_token: str, server_keys: Path,
) -> None:
    token = register(client, enrollment_token, "dev-0")
    create_release(client, auth, version=1, percent=100)
    shadow = shadow_release(client, auth, 2, percent=40, report_after={"rows": 500, "hours": 2})
    assert (shadow["mode"], shadow["report_after"]) == ("shadow", {"rows": 500, "hours": 2.0})
    root = service_root(server_keys)
    index = verified_index(client, token, root)
    assert [e.version for e in index.models["demo"]] == [1]  # the install release stands
    [entry] = index.shadows["demo"]
    assert (entry.version, entry.rollout.percent, entry.rollout.salt) == (2, 40.0, shadow["salt"])
    assert (entry.report_after.rows, entry.report_after.hours) == (500, 2.0)

    # a newer shadow supersedes the older one, never the install release
    newer = shadow_release(client, auth, 3, percent=10)
    assert newer["report_after"] == {"rows": 1000, "hours": 24.0}
    assert client.get(f"/v1/releases/{shadow['id']}", headers=auth).json()["state"] == "superseded"
    index = verified_index(client, token, root)
    assert [e.version for e in index.shadows["demo"]] == [3]
    assert [e.version for e in index.models["demo"]] == [1]
    assert client.post(f"/v1/releases/{shadow['id']}/promote", headers=auth, json={}).status_code == 409

    r = client.post(f"/v1/releases/{newer['id']}/promote", headers=auth, json={"percent": 25})
    assert r.status_code == 200, r.text
    promoted = r.json()
    assert (promoted["mode"], promoted["percent"], promoted["salt"]) == ("install", 25.0, newer["salt"])
    index = verified_index(client, token, root)
    assert index.shadows == {} and [e.version for e in index.models["demo"]] == [3, 1]
    assert index.models["demo"][0].rollout.salt == newer["salt"]
    assert "shadows" not in client.get("/v1/channels/stable/index", headers=bearer(token)).json()["signed"]
    audit = client.get("/v1/audit", params={"release": newer["id"]}, headers=auth).json()
    assert [(a["action"], a["detail"]) for a in audit[:1]] == [("promote", {"from": 10.0, "to": 25.0})]
    again = client.post(f"/v1/releases/{newer['id']}/promote", headers=auth, json={})
    assert (again.status_code, again.json()["code"]) == (409, "not_shadow")


def test_shadow_reports_sum_across_devices(
    client: TestClient, auth: dict[str, str], published: None, enrollment_token: str
) -> None:
    rng = random.Random(5)
    tokens = {f"dev-{i}": register(client, enrollment_token, f"dev-{i}") for i in range(3)}
    create_release(client, auth, version=1, percent=100)
    rel = shadow_release(client, auth, 2)
    sent = []
    for device_id, token in tokens.items():
        batch = [event("installed", version=1)]
        for _ in range(3):
            rows = rng.randint(200, 3000)
            pairs = min(rows, 2000)
            w = agreement(2, rows, rng.randint(rows // 2, rows), rng.randint(0, rows // 10),
                          rng.randint(0, rows // 10), pairs, round(rng.uniform(-0.2, 1), 6))
            batch.append(w)
            sent.append((device_id, w["data"]))
        assert post(client, token, device_id, batch).status_code == 200
    # a window without a correlation counts its rows, not its pairs, into the correlation
    assert post(client, tokens["dev-0"], "dev-0", [agreement(2, 1, 1, 0, 0, 1, None)]).status_code == 200
    sent.append(("dev-0", agreement(2, 1, 1, 0, 0, 1, None)["data"]))

    body = client.get(f"/v1/releases/{rel['id']}/behaviour", headers=auth).json()
    got = body["shadow"]
    rows = sum(d["rows"] for _, d in sent)
    assert body["mode"] == "shadow"
    assert (got["devices"], got["reports"], got["rows"]) == (3, len(sent), rows)
    assert got["agreement"] == pytest.approx(sum(d["agree"] for _, d in sent) / rows, rel=1e-12)
    assert got["active_anomaly_rate"] == pytest.approx(sum(d["active_anomalies"] for _, d in sent) / rows)
    assert got["shadow_anomaly_rate"] == pytest.approx(sum(d["shadow_anomalies"] for _, d in sent) / rows)
    weighted = [(d["rank_correlation"], d["rank_pairs"]) for _, d in sent
                if d["rank_correlation"] is not None]
    expected = sum(c * n for c, n in weighted) / sum(n for _, n in weighted)
    assert got["rank_correlation"] == pytest.approx(expected)
    assert body["gate"]["baseline"] == "active model (shadow)" and body["gate"]["bounds"] is None


def test_the_gate_halts_a_shadow_that_disagrees_and_it_cannot_be_promoted(
    client: TestClient, auth: dict[str, str], published: None, enrollment_token: str, server_keys: Path,
) -> None:
    tokens = {f"dev-{i}": register(client, enrollment_token, f"dev-{i}") for i in range(3)}
    create_release(client, auth, version=1, percent=100)
    rel = shadow_release(client, auth, 2, behaviour_gate={"min_devices": 2, "min_rows": 400,
                                                          "min_agreement": 0.9, "min_rank_correlation": 0.5})
    # trained on telemetry in other units: flags everything, agrees on the few real anomalies
    bad = agreement(2, 300, 18, 18, 300, 300, 0.12)
    assert post(client, tokens["dev-0"], "dev-0", [event("installed", version=1), bad]).status_code == 200
    waiting = client.get(f"/v1/releases/{rel['id']}/behaviour", headers=auth).json()["gate"]
    assert waiting["waiting"] == "1 of 2 devices, 300 of 400 shadow rows" and waiting["breach"] is None
    bad = agreement(2, 300, 18, 18, 300, 300, 0.12)
    assert post(client, tokens["dev-1"], "dev-1", [event("installed", version=1), bad]).status_code == 200
    after = client.get(f"/v1/releases/{rel['id']}", headers=auth).json()
    assert after["state"] == "halted"
    assert after["halt_reason"] == (
        "behaviour gate (shadow): anomaly rate 100.0% against 6.0% for the active model on the same rows "
        "(×16.67, bound ×2); label agreement 6.0% (floor 90%); score rank correlation 0.120 (floor 0.5), "
        "over 2 devices and 600 rows")
    index = verified_index(client, tokens["dev-2"], service_root(server_keys))
    assert index.shadows == {} and [e.version for e in index.models["demo"]] == [1]
    r = client.post(f"/v1/releases/{rel['id']}/promote", headers=auth, json={})
    assert (r.status_code, r.json()["code"]) == (409, "release_halted")
    # the release console's page says it was a shadow, and shows both models on the same rows
    login = client.post("/console/login", data={"token": auth["Authorization"].removeprefix("Bearer ")})
    assert login.status_code == 200
    page = client.get(f"/console/releases/{rel['id']}").text
    assert 'id="shadow-tag"' in page and 'id="shadow"' in page
    assert "6.0% → 100.0%" in page and "label agreement 6.0%" in page


def test_a_shadow_that_agrees_passes(
    client: TestClient, auth: dict[str, str], published: None, enrollment_token: str
) -> None:
    tokens = {f"dev-{i}": register(client, enrollment_token, f"dev-{i}") for i in range(2)}
    create_release(client, auth, version=1, percent=100)
    rel = shadow_release(client, auth, 2, behaviour_gate={"min_devices": 2, "min_rows": 400})
    for device_id, token in tokens.items():
        good = agreement(2, 500, 488, 30, 34, 500, 0.97)
        assert post(client, token, device_id, [event("installed", version=1), good]).status_code == 200
    body = client.get(f"/v1/releases/{rel['id']}/behaviour", headers=auth).json()
    assert body["gate"]["breach"] is None and body["gate"]["waiting"] is None
    assert body["gate"]["rate_ratio"] == pytest.approx(68 / 60)
    assert client.get(f"/v1/releases/{rel['id']}", headers=auth).json()["state"] == "active"


def _count(client: TestClient) -> int:
    app: Any = client.app
    with Session(app.state.engine) as s:
        query = select(func.count()).select_from(DeviceEvent).where(DeviceEvent.kind == "shadow")
        return int(s.exec(query).one())


@pytest.mark.parametrize(("change", "code"), [
    ({"agree": 301}, "validation_error"),
    ({"active_anomalies": -1}, "validation_error"),
    ({"shadow_anomalies": 301}, "validation_error"),
    ({"rank_pairs": 301}, "validation_error"),
    ({"rows": 3000, "rank_pairs": 2001}, "validation_error"),
    ({"rank_correlation": 1.5}, "validation_error"),
    ({"rank_correlation": "high"}, "validation_error"),
    ({"rows": 0}, "validation_error"),
    ({"active_version": 2}, "validation_error"),  # not below the candidate
    ({"extra": 1}, "validation_error"),
    ({"version": 3}, "shadow_not_released"),  # v3 was never a shadow here
])
def test_bad_shadow_reports_are_refused_whole(
    client: TestClient, auth: dict[str, str], published: None, enrollment_token: str,
    change: dict[str, Any], code: str,
) -> None:
    token = register(client, enrollment_token, "dev-0")
    create_release(client, auth, version=1, percent=100)
    shadow_release(client, auth, 2)
    before = _count(client)
    change = dict(change)  # one parameter object serves both databases' runs
    version = change.pop("version", 2)
    bad = agreement(version, 300, 250, 10, 12, 300, 0.8)
    bad["data"].update(change)
    r = post(client, token, "dev-0", [agreement(2, 300, 250, 10, 12, 300, 0.8), bad])
    assert r.status_code == 422, r.text
    assert r.json()["code"] == code
    assert _count(client) == before


@pytest.mark.parametrize(("body", "words"), [
    ({"urgent": True}, "neither urgent nor phases"),
    ({"phases": [{"percent": 5, "hold_s": 60}, {"percent": 100, "hold_s": 60}], "percent": 5},
     "neither urgent nor phases"),
    ({"report_after": {"rows": 0, "hours": 1}}, "rows"),
    ({"report_after": {"rows": 10, "hours": 0}}, "hours"),
    ({"report_after": {"rows": 10, "hours": 721}}, "hours"),
    ({"mode": "install", "report_after": {"rows": 10, "hours": 1}}, "report_after is for shadow"),
    ({"mode": "canary"}, "mode"),
])
def test_bad_shadow_releases_are_refused(
    client: TestClient, auth: dict[str, str], published: None, body: dict[str, Any], words: str,
) -> None:
    app: Any = client.app
    with Session(app.state.engine) as s:
        before = int(s.exec(select(func.count()).select_from(Release)).one())
    r = client.post("/v1/releases", headers=auth, json={
        "fleet": "field", "channel": "stable", "model": "demo", "version": 2, "percent": 100,
        "mode": "shadow", **body})
    assert r.status_code == 422, r.text
    assert words in r.text
    with Session(app.state.engine) as s:
        assert int(s.exec(select(func.count()).select_from(Release)).one()) == before
