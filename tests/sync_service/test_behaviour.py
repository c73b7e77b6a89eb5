"""Behaviour reports and the behaviour gate (sync_service/behaviour.py), against the real
service on SQLite and PostgreSQL: sums across devices and versions checked against numbers
computed here, the gate halting with its reason and figures, and every malformed report
refused with nothing stored."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from sync_service.models import DeviceEvent
from tests.sync_service.bundle_factory import manifest_signed, tiny_onnx, write_bundle
from tests.sync_service.fleet_helpers import bearer, create_release, event, publish, register

EDGES = [-0.5, 0.0, 0.5]
REFERENCE = [0.1, 0.2, 0.3, 0.4]
REFERENCE_RATE = 0.05


@pytest.fixture
def published(
    client: TestClient, auth: dict[str, str], fleet: str, tmp_path: Path,
    publisher_keys: list[Ed25519PrivateKey],
) -> None:
    """demo v1, v2 and v3, each manifest with a behaviour profile of four bins."""
    for version in (1, 2, 3):
        data = tiny_onnx(version)
        signed = manifest_signed("demo", version, {"cpu": data})
        signed["behaviour"] = {"score_edges": EDGES, "reference_histogram": REFERENCE,
                               "anomaly_rate": REFERENCE_RATE, "rows": 1000, "expected_band": None}
        publish(client, auth, write_bundle(tmp_path / f"b{version}", signed, [data], publisher_keys))


def window(version: int, rows: int, anomalies: int, histogram: list[int], p50: float = 1.0,
           p95: float = 2.0, provider: str = "CPUExecutionProvider", **extra: Any) -> dict[str, Any]:
    data = {"since": "2026-01-01T00:00:00Z", "rows": rows, "anomalies": anomalies,
            "calls": max(1, rows // 10), "histogram": histogram, "latency_ms": {"p50": p50, "p95": p95},
            "provider": provider, **extra}
    return {**event("behaviour", version=version), "data": data}


def post(client: Any, token: str, device_id: str, events: list[dict[str, Any]]) -> Any:
    return client.post(f"/v1/devices/{device_id}/reports", json={"events": events}, headers=bearer(token))


def split(rows: int, shares: list[float]) -> list[int]:
    counts = [int(rows * s) for s in shares[:-1]]
    return [*counts, rows - sum(counts)]


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def psi(a: list[float], b: list[float]) -> float:
    pa = [max(x / sum(a), 1e-4) for x in a]
    pb = [max(x / sum(b), 1e-4) for x in b]
    return sum((x - y) * math.log(x / y) for x, y in zip(pa, pb, strict=True))


def test_reports_sum_across_devices_and_versions(
    client: TestClient, auth: dict[str, str], published: None, enrollment_token: str
) -> None:
    rng = random.Random(11)
    tokens = {f"dev-{i}": register(client, enrollment_token, f"dev-{i}") for i in range(4)}
    create_release(client, auth, version=1, percent=100)
    for device_id, token in tokens.items():
        assert post(client, token, device_id, [event("installed", version=1)]).status_code == 200
    # sent before the candidate's release: outside its window, counted nowhere below
    early = window(1, 5000, 4000, [1000, 1000, 1000, 2000])
    assert post(client, tokens["dev-0"], "dev-0", [early]).status_code == 200

    rel = create_release(client, auth, version=2, percent=100)
    sent: dict[int, list[tuple[str, dict[str, Any]]]] = {1: [], 2: []}
    for device_id, token in tokens.items():
        batch = []
        versions = [1] if device_id == "dev-3" else [1, 2]
        if 2 in versions:
            batch.append(event("installed", version=2))
        for version in versions:
            for _ in range(2):
                rows = rng.randint(300, 900)
                provider = "NnapiExecutionProvider" if device_id == "dev-1" else "CPUExecutionProvider"
                w = window(version, rows, rng.randint(0, rows // 5), split(rows, [0.15, 0.25, 0.25, 0.35]),
                           p50=round(rng.uniform(0.5, 2), 3), p95=round(rng.uniform(2, 9), 3),
                           provider=provider)
                batch.append(w)
                sent[version].append((device_id, w["data"]))
        assert post(client, token, device_id, batch).status_code == 200

    r = client.get(f"/v1/releases/{rel['id']}/behaviour", headers=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    for key, version in (("candidate", 2), ("incumbent", 1)):
        windows = [d for _, d in sent[version]]
        got = body[key]
        rows = sum(d["rows"] for d in windows)
        assert got["version"] == version
        assert got["devices"] == len({dev for dev, _ in sent[version]})
        assert (got["reports"], got["rows"], got["anomalies"]) == (
            len(windows), rows, sum(d["anomalies"] for d in windows))
        assert got["anomaly_rate"] == pytest.approx(got["anomalies"] / rows, rel=1e-12)
        assert got["histogram"] == [sum(d["histogram"][i] for d in windows) for i in range(4)]
        assert got["latency_p50_ms"] == nearest_rank([d["latency_ms"]["p50"] for d in windows], 0.5)
        assert got["latency_p95_ms"] == nearest_rank([d["latency_ms"]["p95"] for d in windows], 0.95)
    assert body["candidate"]["providers"] == {"CPUExecutionProvider": 2, "NnapiExecutionProvider": 1}
    # judged against the incumbent (it has at least the default 1,000 rows), no gate set
    gate = body["gate"]
    assert gate["bounds"] is None and gate["breach"] is None and gate["baseline"] == "incumbent v1"
    assert gate["psi"] == pytest.approx(psi(body["candidate"]["histogram"], body["incumbent"]["histogram"]))
    assert gate["rate_ratio"] == pytest.approx(
        body["candidate"]["anomaly_rate"] / body["incumbent"]["anomaly_rate"])
    assert body["reference"] == {"anomaly_rate": REFERENCE_RATE, "histogram": REFERENCE, "score_edges": EDGES}


GATE = {"max_rate_ratio": 2.0, "max_psi": 0.25, "min_devices": 2, "min_rows": 400}


def _gated(
    client: TestClient, auth: dict[str, str], enrollment_token: str
) -> tuple[dict[str, Any], dict[str, str]]:
    tokens = {f"dev-{i}": register(client, enrollment_token, f"dev-{i}") for i in range(3)}
    create_release(client, auth, version=1, percent=100)
    r = client.post("/v1/releases", headers=auth, json={
        "fleet": "field", "channel": "stable", "model": "demo", "version": 2, "percent": 50,
        "behaviour_gate": GATE})
    assert r.status_code == 201, r.text
    rel = r.json()
    assert rel["behaviour_gate"] == {**GATE, "min_agreement": 0.9, "min_rank_correlation": None}
    for device_id, token in tokens.items():
        batch = [event("installed", version=1), window(1, 1000, 50, [100, 200, 300, 400])]
        assert post(client, token, device_id, batch).status_code == 200
    return rel, tokens


def test_a_breach_halts_with_the_reason_and_the_figures(
    client: TestClient, auth: dict[str, str], published: None, enrollment_token: str
) -> None:
    rel, tokens = _gated(client, auth, enrollment_token)
    def bad() -> list[dict[str, Any]]:  # a model trained on telemetry in other units: half anomalous
        return [event("installed", version=2), window(2, 300, 150, [150, 100, 30, 20])]

    assert post(client, tokens["dev-0"], "dev-0", bad()).status_code == 200
    status = client.get(f"/v1/releases/{rel['id']}/behaviour", headers=auth).json()
    assert status["gate"]["waiting"] == "1 of 2 devices, 300 of 400 rows"
    assert client.get(f"/v1/releases/{rel['id']}", headers=auth).json()["state"] == "active"

    assert post(client, tokens["dev-1"], "dev-1", bad()).status_code == 200
    after = client.get(f"/v1/releases/{rel['id']}", headers=auth).json()
    assert after["state"] == "halted"
    reason = after["halt_reason"]
    assert reason.startswith(
        "behaviour gate: anomaly rate 50.0% against 5.0% for the incumbent v1 (×10.00, bound ×2)")
    expected_psi = psi([300, 200, 60, 40], [300, 600, 900, 1200])  # three devices' v1 windows
    assert f"score PSI {expected_psi:.3f}" in reason and "over 2 devices and 600 rows" in reason
    last = client.get("/v1/audit", params={"release": rel["id"]}, headers=auth).json()[0]
    assert (last["action"], last["actor"], last["actor_token_id"]) == ("halt", "behaviour-gate", None)
    # the device's next index no longer offers v2
    index = client.get("/v1/channels/stable/index", headers=bearer(tokens["dev-2"])).json()
    assert index["signed"]["version"] == last["index_version"]
    assert [e["version"] for e in index["signed"]["models"]["demo"]] == [1]
    # and the release console's page says why, beside the two versions' figures
    login = client.post("/console/login", data={"token": auth["Authorization"].removeprefix("Bearer ")})
    assert login.status_code == 200  # redirected to the releases page
    page = client.get(f"/console/releases/{rel['id']}").text
    assert "behaviour gate: anomaly rate 50.0%" in page and 'id="behaviour"' in page
    assert "v1 (incumbent)" in page


def test_a_candidate_like_the_incumbent_rolls_on(
    client: TestClient, auth: dict[str, str], published: None, enrollment_token: str
) -> None:
    rel, tokens = _gated(client, auth, enrollment_token)
    for device_id in ("dev-0", "dev-1", "dev-2"):
        good = [event("installed", version=2), window(2, 800, 48, [80, 170, 240, 310])]
        assert post(client, tokens[device_id], device_id, good).status_code == 200
    body = client.get(f"/v1/releases/{rel['id']}/behaviour", headers=auth).json()
    assert body["gate"]["breach"] is None and body["gate"]["waiting"] is None
    assert body["gate"]["rate_ratio"] == pytest.approx((144 / 2400) / 0.05)
    assert client.get(f"/v1/releases/{rel['id']}", headers=auth).json()["state"] == "active"


def test_the_version_after_a_halted_one_is_judged_against_the_one_before(
    client: TestClient, auth: dict[str, str], published: None, enrollment_token: str
) -> None:
    rel, tokens = _gated(client, auth, enrollment_token)
    for device_id in ("dev-0", "dev-1"):  # v2 flags half of everything: halted
        bad = [event("installed", version=2), window(2, 300, 150, [150, 100, 30, 20])]
        assert post(client, tokens[device_id], device_id, bad).status_code == 200
    assert client.get(f"/v1/releases/{rel['id']}", headers=auth).json()["state"] == "halted"
    r = client.post("/v1/releases", headers=auth, json={
        "fleet": "field", "channel": "stable", "model": "demo", "version": 3, "percent": 100,
        "behaviour_gate": GATE})
    assert r.status_code == 201, r.text
    good_release = r.json()
    for device_id in ("dev-0", "dev-1", "dev-2"):
        batch = [window(1, 1000, 50, [100, 200, 300, 400]),
                 event("installed", version=3), window(3, 500, 26, [50, 100, 150, 200])]
        if device_id != "dev-2":  # the two that ran the bad one still report on it
            batch.append(window(2, 300, 150, [150, 100, 30, 20]))
        assert post(client, tokens[device_id], device_id, batch).status_code == 200
    body = client.get(f"/v1/releases/{good_release['id']}/behaviour", headers=auth).json()
    assert body["incumbent"]["version"] == 1 and body["gate"]["baseline"] == "incumbent v1"
    assert body["gate"]["breach"] is None
    assert client.get(f"/v1/releases/{good_release['id']}", headers=auth).json()["state"] == "active"


def _stored(app: FastAPI, device_id: str) -> int:
    with Session(app.state.engine) as session:
        return int(session.exec(select(func.count()).select_from(DeviceEvent)
                                .where(DeviceEvent.device_id == device_id)).one())


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"model": None}, "validation_error"),
        ({"data": None}, "validation_error"),
        ({"data.rows": 0}, "validation_error"),
        ({"data.rows": "100"}, "validation_error"),
        ({"data.rows": 100.5}, "validation_error"),
        ({"data.anomalies": -1}, "validation_error"),
        ({"data.anomalies": 101}, "validation_error"),
        ({"data.histogram": [50, 50, 1, -1]}, "validation_error"),
        ({"data.histogram": [10, 10, 10, 10]}, "validation_error"),  # sums to 40, not 100
        ({"data.histogram": [1] * 65}, "validation_error"),
        ({"data.latency_ms": {"p50": 3.0, "p95": 2.0}}, "validation_error"),
        ({"data.latency_ms": {"p50": 1.0, "p95": 1e12}}, "validation_error"),
        ({"data.provider": "CPU Execution"}, "validation_error"),
        ({"data.rows_by_user": [1, 2]}, "validation_error"),
        ({"data.histogram": [50, 50]}, "wrong_bin_count"),
        ({"data.histogram": []}, "wrong_bin_count"),
        ({"version": 2}, "behaviour_not_installed"),
        ({"model": "other"}, "behaviour_not_installed"),
    ],
)
def test_bad_behaviour_reports_are_refused_whole(
    client: TestClient, app: FastAPI, auth: dict[str, str], published: None, enrollment_token: str,
    change: dict[str, Any], code: str,
) -> None:
    token = register(client, enrollment_token, "dev-x")
    assert post(client, token, "dev-x", [event("installed", version=1)]).status_code == 200
    before = _stored(app, "dev-x")
    bad = window(1, 100, 5, [10, 20, 30, 40])
    for key, value in change.items():
        if key.startswith("data."):
            bad["data"][key.removeprefix("data.")] = value
        else:
            bad[key] = value
    r = post(client, token, "dev-x", [event("install_failed", version=1, reason="x"), bad])
    assert r.status_code == 422, r.text
    assert r.json()["code"] == code
    assert _stored(app, "dev-x") == before  # the batch is refused whole


def test_manifests_from_the_packager_carry_a_profile(small_bundle: Path) -> None:
    import json

    from packager.manifest import ModelManifest

    raw = json.loads((small_bundle / "manifest.json").read_text())
    manifest = ModelManifest.model_validate(raw["signed"])
    prof = manifest.behaviour
    assert prof is not None
    assert len(prof.score_edges) == 9 and prof.score_edges == sorted(set(prof.score_edges))
    assert sum(prof.reference_histogram) == pytest.approx(1.0)
    # deciles: every bin holds about a tenth of the parity rows
    assert all(abs(share - 0.1) < 0.02 for share in prof.reference_histogram)
    assert 0 < prof.anomaly_rate < 0.5 and prof.expected_band is None


def test_cli_creates_a_gated_release_and_shows_its_behaviour(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], live_server: str,
    publisher_token: str, published: None, enrollment_token: str, tmp_path: Path,
) -> None:
    import json

    import httpx

    from packager.cli import main

    monkeypatch.setenv("MODELSYNC_TOKEN", publisher_token)
    monkeypatch.setenv("MODELSYNC_SERVER", live_server)
    monkeypatch.setenv("MODELSYNC_CONFIG", str(tmp_path / "absent.toml"))
    assert main(["release", "create", "--fleet", "field", "--model", "demo", "--version", "1",
                 "--percent", "100", "--gate-psi", "0.1", "--gate-min-devices", "1", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    gate = {"max_rate_ratio": 2.0, "max_psi": 0.1, "min_devices": 1, "min_rows": 1000,  # the rest defaults
            "min_agreement": 0.9, "min_rank_correlation": None}
    assert created["behaviour_gate"] == gate
    with httpx.Client(base_url=live_server) as api:
        token = register(api, enrollment_token, "dev-cli")
        batch = [event("installed", version=1), window(1, 200, 10, [20, 40, 60, 80])]
        r = post(api, token, "dev-cli", batch)
        assert r.status_code == 200
    assert main(["release", "behaviour", str(created["id"])]) == 0
    out = capsys.readouterr().out
    assert "candidate v1" in out and "5.00%" in out and "waiting: 1 of 1 devices, 200 of 1,000 rows" in out
