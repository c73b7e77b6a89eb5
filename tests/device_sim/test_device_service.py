"""The device against the real sync service: in-process (httpx.ASGITransport) and on a
real uvicorn server on loopback through the `modelsync device` CLI. Real bundles (a small
IsolationForest from tests/conftest.py's make_bundle), real SQLite, real onnxruntime."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from device_sim.device import Device
from device_sim.updater import SyncConfig
from packager.cli import main as cli_main
from packager.manifest import ModelManifest
from sync_service import crud
from sync_service.core.config import Settings
from sync_service.main import create_app
from tests.sync_service.live import serve_in_thread

FLEET = "field"


@pytest.fixture
def app(tmp_path: Path, keys_dir: Path) -> Iterator[FastAPI]:
    settings = Settings(data_dir=tmp_path / "data", root_path=keys_dir / "root.json",
                        index_key_path=keys_dir / "index.key", storage_backend="local")
    application = create_app(settings)
    yield application
    application.state.engine.dispose()


def _token(app: FastAPI, kind: Literal["publisher", "enrollment"], **kw: Any) -> str:
    with Session(app.state.engine) as session:
        if kind == "enrollment":
            fleet = crud.get_fleet(session=session, name=FLEET)
            if fleet is None:
                fleet = crud.create_fleet(session=session, name=FLEET)
            session.flush()
            kw["fleet_id"] = fleet.id
        plain, _ = crud.create_token(session=session, kind=kind, name="t", **kw)
        session.commit()
    return str(plain)


@pytest.fixture
def admin(app: FastAPI) -> Iterator[Callable[..., httpx.Response]]:
    token = _token(app, "publisher", scopes=("publish", "release", "admin"))
    with TestClient(app) as client:
        def call(method: str, path: str, **kw: Any) -> httpx.Response:
            resp: httpx.Response = client.request(
                method, path, headers={"Authorization": f"Bearer {token}"}, **kw)
            return resp
        yield call


def _publish_and_release(admin: Callable[..., httpx.Response], bundle: Path, percent: float = 100.0) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in sorted(bundle.iterdir()):
            tar.add(f, arcname=f.name)
    r = admin("POST", "/v1/bundles", content=buf.getvalue())
    assert r.status_code in (200, 201), r.text
    body = r.json()
    r = admin("POST", "/v1/releases", json={"fleet": FLEET, "channel": "stable", "model": body["name"],
                                             "version": body["version"], "percent": percent})
    assert r.status_code == 201, r.text


def _rows(bundle: Path) -> np.ndarray:
    manifest = ModelManifest.model_validate(json.loads((bundle / "manifest.json").read_text())["signed"])
    return np.asarray(manifest.golden.inputs, dtype=np.float32)


async def test_devices_install_update_and_report_in_process(
    app: FastAPI, admin: Callable[..., httpx.Response], make_bundle: Callable[..., Path],
    keys_dir: Path, tmp_path: Path,
) -> None:
    enroll = _token(app, "enrollment")
    _publish_and_release(admin, make_bundle(1))
    root = json.loads((keys_dir / "root.json").read_text())
    transport = httpx.ASGITransport(app=app)
    devices = {}
    for platform in ("linux", "android", "ios"):
        devices[platform] = await Device.async_register(
            tmp_path / platform, server="http://service.test", enroll_token=enroll, platform=platform,
            root_envelope=root, transport=transport, config=SyncConfig(deadline=60))
    for platform, device in devices.items():
        result = await device.async_sync()
        assert [(o.outcome, o.version) for o in result.installed] == [("installed", 1)], (platform, result)
        assert device.store.usable("fleet-iforest").target == device.store.identity.target  # type: ignore[union-attr]
    linux = devices["linux"]
    pred = linux.predict(_rows(make_bundle(1)))
    assert len(pred) == len(_rows(make_bundle(1))) and pred.anomalies >= 1
    # nothing new: 304
    assert (await linux.async_sync()).status == "not_modified"
    # v2: a different forest; delivered as a delta or zstd, verified, previous kept
    _publish_and_release(admin, make_bundle(2))
    result = await linux.async_sync()
    assert [o.version for o in result.installed] == [2] and result.installed[0].transfer in ("delta", "zstd")
    slot = linux.store.slot("fleet-iforest")
    assert slot is not None and slot.previous is not None and slot.previous.version == 1
    releases = admin("GET", f"/v1/releases?fleet={FLEET}&channel=stable").json()
    latest = max(releases, key=lambda r: r["version"])
    status = admin("GET", f"/v1/releases/{latest['id']}/status").json()
    assert status["installs"] >= 1 and status["devices_by_version"].get("2", 0) >= 1


def test_cli_against_a_live_server(
    app: FastAPI, admin: Callable[..., httpx.Response], make_bundle: Callable[..., Path],
    keys_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    enroll = _token(app, "enrollment")
    bundle = make_bundle(1)
    _publish_and_release(admin, bundle)
    state = tmp_path / "dev"
    csv = tmp_path / "rows.csv"
    manifest = json.loads((bundle / "manifest.json").read_text())["signed"]
    names = [f["name"] for f in manifest["model"]["features"]]
    csv.write_text(",".join(names) + "\n" + "\n".join(",".join(map(str, r)) for r in _rows(bundle)) + "\n")
    with serve_in_thread(app) as url:
        assert cli_main(["device", "register", "--server", url, "--enroll-token", enroll, "--state",
                         str(state), "--platform", "linux", "--root", str(keys_dir / "root.json"),
                         "--device-id", "cli-1"]) == 0
        assert cli_main(["device", "sync", "--state", str(state), "--once"]) == 0
        assert cli_main(["device", "predict", "--state", str(state), "--csv", str(csv),
                         "--out", str(tmp_path / "out.csv")]) == 0
        assert cli_main(["device", "sync", "--state", str(state)]) == 0
        assert cli_main(["device", "status", "--state", str(state)]) == 0
        bad = cli_main(["device", "register", "--server", url, "--enroll-token", "mse_nope",
                        "--state", str(tmp_path / "other"), "--platform", "linux",
                        "--root", str(keys_dir / "root.json")])
    out, err = capsys.readouterr()
    assert "registered cli-1 in fleet field" in out
    assert "installed fleet-iforest v1" in out
    assert "fleet-iforest" in out and "v1" in out
    assert bad == 2 and "registration refused: HTTP 401" in err
    assert not (tmp_path / "other").exists()
    assert (tmp_path / "out.csv").read_text().splitlines()[0] == "label,score"
