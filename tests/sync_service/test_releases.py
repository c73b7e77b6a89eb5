"""Releases over HTTP: create, supersede with a fallback, percent, halt, resume, status; each
change a new index version whose signature verifies against the keys' root."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from device_sim.trust import check_index
from packager.manifest import ChannelIndex, Root
from packager.rollout import pick_entry
from sync_service import crud
from sync_service.models import Device
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


@pytest.fixture
def root(server_keys: Path) -> Root:
    return service_root(server_keys)


@pytest.fixture
def published(
    client: TestClient, auth: dict[str, str], fleet: str, bundle_factory: Callable[..., Path]
) -> dict[int, Path]:
    """demo v1..v4 stored on the service."""
    bundles = {v: bundle_factory(version=v, seed=v) for v in range(1, 5)}
    for b in bundles.values():
        publish(client, auth, b)
    return bundles


@pytest.fixture
def device(client: TestClient, enrollment_token: str) -> str:
    return register(client, enrollment_token, "dev-1")


class Reader:
    """A device's view: each index must verify and never go back in version."""

    def __init__(self, client: TestClient, token: str, root: Root) -> None:
        self.client, self.token, self.root, self.version = client, token, root, 0

    def __call__(self, channel: str = "stable") -> ChannelIndex:
        r = self.client.get(f"/v1/channels/{channel}/index", headers=bearer(self.token))
        assert r.status_code == 200, r.text
        index = check_index(json.loads(r.content), self.root, fleet="field", channel=channel,
                            trusted_version=self.version)
        self.version = index.version
        return index

    def entries(self, model: str = "demo") -> list[tuple[int, float]]:
        return [(e.version, e.rollout.percent) for e in self().models.get(model, [])]


@pytest.fixture
def reader(client: TestClient, device: str, root: Root) -> Reader:
    return Reader(client, device, root)


def test_create_release_answer_and_index_entry(
    client: TestClient, auth: dict[str, str], published: dict[int, Path], reader: Reader
) -> None:
    before = reader().version
    rel = create_release(client, auth, version=1, percent=30, urgent=True)
    assert {k: rel[k] for k in ("fleet", "channel", "model", "version", "percent", "urgent", "state")} == {
        "fleet": "field",
        "channel": "stable",
        "model": "demo",
        "version": 1,
        "percent": 30.0,
        "urgent": True,
        "state": "active",
    }
    assert len(rel["salt"]) == 32 and rel["halt_reason"] is None
    index = reader()
    assert index.version == before + 1
    (entry,) = index.models["demo"]
    manifest_bytes = (published[1] / "manifest.json").read_bytes()
    sha = hashlib.sha256(manifest_bytes).hexdigest()
    assert entry.manifest.path == f"blobs/{sha}"
    assert (entry.manifest.sha256, entry.manifest.length) == (sha, len(manifest_bytes))
    assert (entry.rollout.percent, entry.rollout.salt, entry.urgent) == (30.0, rel["salt"], True)
    other = create_release(client, auth, version=2, percent=30)
    assert other["salt"] != rel["salt"]


def test_new_release_supersedes_but_keeps_the_full_rollout_as_fallback(
    client: TestClient, auth: dict[str, str], published: dict[int, Path], reader: Reader
) -> None:
    r1 = create_release(client, auth, version=1, percent=100)
    assert reader.entries() == [(1, 100.0)]
    r2 = create_release(client, auth, version=2, percent=10)
    assert reader.entries() == [(2, 10.0), (1, 100.0)]
    r3 = create_release(client, auth, version=3, percent=20)
    assert reader.entries() == [(3, 20.0), (1, 100.0)]
    states = {r["id"]: r["state"] for r in client.get("/v1/releases", headers=auth).json()}
    assert states == {r1["id"]: "active", r2["id"]: "superseded", r3["id"]: "active"}
    assert client.patch(f"/v1/releases/{r3['id']}", json={"percent": 100}, headers=auth).status_code == 200
    assert reader.entries() == [(3, 100.0)]  # v1 can no longer be picked by anyone
    create_release(client, auth, version=4, percent=5)
    assert reader.entries() == [(4, 5.0), (3, 100.0)]
    assert client.get(f"/v1/releases/{r1['id']}", headers=auth).json()["state"] == "superseded"


def test_halt_removes_the_release_and_resume_restores_it(
    client: TestClient, auth: dict[str, str], published: dict[int, Path], reader: Reader
) -> None:
    create_release(client, auth, version=1, percent=100)
    r2 = create_release(client, auth, version=2, percent=50)
    halted = client.post(
        f"/v1/releases/{r2['id']}/halt", json={"reason": "crash loop on pixel 7"}, headers=auth
    )
    assert halted.status_code == 200
    assert (halted.json()["state"], halted.json()["halt_reason"]) == ("halted", "crash loop on pixel 7")
    assert halted.json()["halted_by_health_gate"] is False
    assert reader.entries() == [(1, 100.0)]
    again = client.post(f"/v1/releases/{r2['id']}/halt", json={"reason": "twice"}, headers=auth)
    assert again.status_code == 200 and again.json()["halt_reason"] == "crash loop on pixel 7"
    resumed = client.post(f"/v1/releases/{r2['id']}/resume", headers=auth)
    assert resumed.status_code == 200 and resumed.json()["state"] == "active"
    assert resumed.json()["halt_reason"] is None
    assert reader.entries() == [(2, 50.0), (1, 100.0)]


def test_resume_refused_when_a_newer_release_is_active(
    client: TestClient, auth: dict[str, str], published: dict[int, Path]
) -> None:
    r1 = create_release(client, auth, version=1, percent=100)
    r2 = create_release(client, auth, version=2, percent=50)
    client.post(f"/v1/releases/{r2['id']}/halt", json={"reason": "bad"}, headers=auth)
    r3 = create_release(client, auth, version=3, percent=50)
    r = client.post(f"/v1/releases/{r2['id']}/resume", headers=auth)
    assert r.status_code == 409 and r.json()["code"] == "newer_release_active"
    assert str(r3["id"]) in r.json()["detail"]
    fallback_halt = client.post(f"/v1/releases/{r1['id']}/halt", json={"reason": "x"}, headers=auth)
    assert fallback_halt.status_code == 200  # r1 is still the fallback, so it may be halted
    assert client.patch(f"/v1/releases/{r1['id']}", json={"percent": 10}, headers=auth).status_code == 200


def test_versions_only_go_up_in_a_channel(
    client: TestClient, auth: dict[str, str], published: dict[int, Path], reader: Reader
) -> None:
    create_release(client, auth, version=2, percent=100)
    before = reader().version
    for version in (1, 2):
        body = create_release(client, auth, version=version, percent=100, expect=409)
        assert body["code"] == "version_not_newer" and "rollback" in body["detail"]
    assert reader().version == before  # nothing written


@pytest.mark.parametrize(
    ("override", "status", "code"),
    [
        ({"fleet": "nope"}, 404, "unknown_fleet"),
        ({"channel": "nope"}, 404, "unknown_channel"),
        ({"version": 99}, 404, "unknown_model_version"),
        ({"percent": 101}, 422, "validation_error"),
        ({"percent": -1}, 422, "validation_error"),
    ],
)
def test_bad_release_requests(
    client: TestClient,
    auth: dict[str, str],
    published: dict[int, Path],
    override: dict[str, Any],
    status: int,
    code: str,
) -> None:
    body = {"fleet": "field", "channel": "stable", "model": "demo", "version": 1, "percent": 10, **override}
    r = client.post("/v1/releases", json=body, headers=auth)
    assert (r.status_code, r.json()["code"]) == (status, code)
    assert client.get("/v1/releases", headers=auth).json() == []


def test_release_routes_need_the_release_scope(
    client: TestClient, make_token: Callable[..., str], published: dict[int, Path], device: str
) -> None:
    publish_only = bearer(make_token("publisher", scopes=("publish",)))
    body = {"fleet": "field", "channel": "stable", "model": "demo", "version": 1, "percent": 10}
    assert client.post("/v1/releases", json=body).status_code == 401
    r = client.post("/v1/releases", json=body, headers=publish_only)
    assert (r.status_code, r.json()["code"]) == (403, "missing_scope")
    assert client.post("/v1/releases", json=body, headers=bearer(device)).status_code == 403
    assert client.get("/v1/releases", headers=bearer(device)).status_code == 403


def test_list_filters_and_unknown_release(
    client: TestClient, app: FastAPI, auth: dict[str, str], published: dict[int, Path]
) -> None:
    with Session(app.state.engine) as session:
        f = crud.get_fleet(session=session, name="field")
        assert f is not None and f.id is not None
        crud.create_channel(session=session, fleet_id=f.id, name="beta")
        session.commit()
    create_release(client, auth, version=1, percent=100)
    create_release(client, auth, version=1, percent=100, channel="beta")
    create_release(client, auth, version=2, percent=10, channel="beta")
    assert len(client.get("/v1/releases", headers=auth).json()) == 3
    beta = client.get("/v1/releases", params={"fleet": "field", "channel": "beta"}, headers=auth).json()
    assert [(r["version"], r["channel"]) for r in beta] == [(2, "beta"), (1, "beta")]
    active = client.get("/v1/releases", params={"state": "superseded"}, headers=auth).json()
    assert active == []
    missing = client.get("/v1/releases/999", headers=auth)
    assert (missing.status_code, missing.json()["code"]) == (404, "unknown_release")


def test_status_counts_rollout_versions_installs_and_failures(
    client: TestClient,
    app: FastAPI,
    auth: dict[str, str],
    published: dict[int, Path],
    root: Root,
    fleet_row: Any,
    enrollment_token: str,
) -> None:
    create_release(client, auth, version=1, percent=100)
    rel = create_release(client, auth, version=2, percent=25)
    with Session(app.state.engine) as session:
        for i in range(2000):
            session.add(Device(id=f"bulk-{i:05d}", fleet_id=fleet_row.id, platform="linux"))
        session.commit()
    devices = [register(client, enrollment_token, f"rep-{i}") for i in range(3)]
    for i, token in enumerate(devices):
        events = [event("installed", version=1)]
        if i == 0:
            events += [event("installed", version=2)]
        if i == 1:
            events += [event("golden_failed", version=2, reason="golden_mismatch")]
        if i == 2:
            events += [
                event("install_failed", version=2, reason="sha256_mismatch"),
                event("install_failed", version=2, reason="sha256_mismatch"),
            ]
        report(client, token, f"rep-{i}", events)

    status = client.get(f"/v1/releases/{rel['id']}/status", headers=auth).json()
    index = fresh_index(client.get("/v1/channels/stable/index", headers=bearer(devices[0])).json(), root)
    ids = [f"bulk-{i:05d}" for i in range(2000)] + [f"rep-{i}" for i in range(3)]
    picked_v2 = sum(1 for d in ids if (e := pick_entry(index.models["demo"], d)) and e.version == 2)
    assert status["devices_in_rollout"] == picked_v2  # the server's bucket is the devices' bucket
    assert status["devices_registered"] == 2003
    assert abs(picked_v2 / 2003 - 0.25) < 0.04  # ~4.5 standard deviations
    assert status["devices_by_version"] == {"1": 2, "2": 1}
    assert status["installs"] == 1
    assert status["failures_by_reason"] == {"golden_mismatch": 1, "sha256_mismatch": 2}
    assert (status["reporting_devices"], status["failing_devices"]) == (3, 2)
    assert status["failure_rate"] == pytest.approx(2 / 3)
    assert status["release"]["id"] == rel["id"] and status["halted_by_health_gate"] is False


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, live_server: str, publisher_token: str, tmp_path: Path) -> str:
    monkeypatch.setenv("MODELSYNC_TOKEN", publisher_token)
    monkeypatch.setenv("MODELSYNC_SERVER", live_server)
    monkeypatch.setenv("MODELSYNC_CONFIG", str(tmp_path / "absent.toml"))
    return live_server


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from packager.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_create_set_halt_resume_status(
    cli_env: str, capsys: pytest.CaptureFixture[str], published: dict[int, Path], reader: Reader
) -> None:
    code, out, _ = _cli(
        capsys,
        "release",
        "create",
        "--fleet",
        "field",
        "--model",
        "demo",
        "--version",
        "1",
        "--percent",
        "40",
        "--json",
    )
    assert code == 0
    rid = str(json.loads(out)["id"])
    assert reader.entries() == [(1, 40.0)]
    assert _cli(capsys, "release", "set", rid, "--percent", "100")[0] == 0
    assert reader.entries() == [(1, 100.0)]
    code, out, _ = _cli(capsys, "release", "halt", rid, "--reason", "field reports")
    assert code == 0 and "halted" in out and "field reports" in out
    assert reader.entries() == []
    assert _cli(capsys, "release", "resume", rid)[0] == 0
    code, out, _ = _cli(capsys, "release", "status", rid)
    assert code == 0 and "devices in rollout" in out and "active" in out
    code, out, _ = _cli(capsys, "release", "list", "--fleet", "field")
    assert code == 0 and "demo" in out
    code, out, _ = _cli(capsys, "release", "audit", "--release", rid, "--json")
    assert code == 0
    assert [e["action"] for e in json.loads(out)] == ["resume", "halt", "set_percent", "create"]
    code, out, _ = _cli(capsys, "release", "audit", "--fleet", "field", "--limit", "2")
    assert code == 0 and "resume" in out and "field reports" in out and "create" not in out


def test_cli_errors_are_one_line(
    cli_env: str, capsys: pytest.CaptureFixture[str], published: dict[int, Path]
) -> None:
    code, _, err = _cli(capsys, "release", "halt", "999", "--reason", "x")
    assert code == 4  # NOT_FOUND
    assert err.strip().count("\n") == 0 and "404" in err and "unknown_release" in err
    with pytest.raises(SystemExit):
        _cli(capsys, "release", "set", "1", "--percent", "120")


def test_cli_rollback_reuses_the_old_artifacts(
    cli_env: str,
    capsys: pytest.CaptureFixture[str],
    client: TestClient,
    auth: dict[str, str],
    published: dict[int, Path],
    device: str,
    root: Root,
    service_keys_dir: Path,
    app: FastAPI,
) -> None:
    from sqlmodel import func, select

    from packager.manifest import verify_manifest
    from sync_service.models import Blob

    create_release(client, auth, version=1, percent=100)
    create_release(client, auth, version=2, percent=100)
    with Session(app.state.engine) as session:
        blobs_before = session.exec(select(func.count()).select_from(Blob)).one()
    code, out, err = _cli(
        capsys,
        "release",
        "rollback",
        "--fleet",
        "field",
        "--model",
        "demo",
        "--from-bundle",
        str(published[1]),
        "--key",
        str(service_keys_dir / "publisher.key"),
        "--version",
        "5",
    )
    assert code == 0, err
    assert "v5" in out
    index = fresh_index(client.get("/v1/channels/stable/index", headers=bearer(device)).json(), root)
    top = index.models["demo"][0]
    assert (top.version, top.rollout.percent) == (5, 100.0)
    raw = client.get(f"/v1/{top.manifest.path}", headers=bearer(device))
    assert raw.status_code == 200 and hashlib.sha256(raw.content).hexdigest() == top.manifest.sha256
    new = verify_manifest(json.loads(raw.content), root)
    old = json.loads((published[1] / "manifest.json").read_text())["signed"]
    assert new.version == 5 and new.model_extra is not None and new.model_extra["rollback_of"] == 1
    assert [(a.target, a.sha256) for a in new.artifacts] == [
        (a["target"], a["sha256"]) for a in old["artifacts"]
    ]
    with Session(app.state.engine) as session:
        assert (
            session.exec(select(func.count()).select_from(Blob)).one() == blobs_before + 1
        )  # the manifest only


def test_cli_rollback_refuses_a_version_not_above_the_bundle(
    cli_env: str, capsys: pytest.CaptureFixture[str], published: dict[int, Path], service_keys_dir: Path
) -> None:
    key = str(service_keys_dir / "publisher.key")
    base = ["release", "rollback", "--fleet", "field", "--from-bundle", str(published[2]), "--key", key]
    code, _, err = _cli(capsys, *base, "--model", "demo", "--version", "2")
    assert code == 2 and "above the old bundle's v2" in err
    code, _, err = _cli(capsys, *base, "--model", "other", "--version", "9")
    assert code == 2 and "holds model 'demo'" in err


def test_concurrent_creates_leave_one_consistent_rollout(
    live_server: str, auth: dict[str, str], published: dict[int, Path], device: str, root: Root
) -> None:
    """Four release engineers (or replicas) create releases of one model at once: the channel
    lock runs them one after another, so exactly one stays active and the index agrees."""
    import threading

    import httpx

    barrier = threading.Barrier(4)
    codes: dict[int, int] = {}

    def create(version: int) -> None:
        with httpx.Client(base_url=live_server, timeout=30) as http:
            barrier.wait()
            r = http.post(
                "/v1/releases",
                json={
                    "fleet": "field",
                    "channel": "stable",
                    "model": "demo",
                    "version": version,
                    "percent": 50,
                },
                headers=auth,
            )
            codes[version] = r.status_code

    threads = [threading.Thread(target=create, args=(v,)) for v in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(codes.values()) <= {201, 409} and 201 in codes.values()
    with httpx.Client(base_url=live_server, timeout=30) as http:
        releases = http.get("/v1/releases", headers=auth).json()
        active = [r["version"] for r in releases if r["state"] == "active"]
        assert len(active) == 1
        assert active[0] == max(v for v, c in codes.items() if c == 201)
        index = fresh_index(http.get("/v1/channels/stable/index", headers=bearer(device)).json(), root)
    assert [e.version for e in index.models["demo"]] == active
