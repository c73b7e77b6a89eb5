"""The device against the real sync service: in-process (httpx.ASGITransport) and on a
real uvicorn server on loopback through the `modelsync device` CLI. Real bundles (a small
IsolationForest from tests/conftest.py's make_bundle), real SQLite, real onnxruntime."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from device_sim.device import Device
from device_sim.updater import SyncConfig
from packager.cli import main as cli_main
from packager.manifest import ModelManifest
from tests.device_sim.service import FLEET, admin, make_token, publish_and_release, service_app
from tests.sync_service.live import serve_in_thread

__all__ = ["admin", "service_app"]  # fixtures


def _rows(bundle: Path) -> np.ndarray:
    manifest = ModelManifest.model_validate(json.loads((bundle / "manifest.json").read_text())["signed"])
    return np.asarray(manifest.golden.inputs, dtype=np.float32)


async def test_devices_install_update_and_report_in_process(
    service_app: FastAPI, admin: Callable[..., httpx.Response], make_bundle: Callable[..., Path],
    keys_dir: Path, tmp_path: Path,
) -> None:
    enroll = make_token(service_app, "enrollment")
    publish_and_release(admin, make_bundle(1))
    root = json.loads((keys_dir / "root.json").read_text())
    transport = httpx.ASGITransport(app=service_app)
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
    publish_and_release(admin, make_bundle(2))
    result = await linux.async_sync()
    assert [o.version for o in result.installed] == [2] and result.installed[0].transfer in ("delta", "zstd")
    slot = linux.store.slot("fleet-iforest")
    assert slot is not None and slot.previous is not None and slot.previous.version == 1
    releases = admin("GET", f"/v1/releases?fleet={FLEET}&channel=stable").json()
    latest = max(releases, key=lambda r: r["version"])
    status = admin("GET", f"/v1/releases/{latest['id']}/status").json()
    assert status["installs"] >= 1 and status["devices_by_version"].get("2", 0) >= 1


def test_cli_against_a_live_server(
    service_app: FastAPI, admin: Callable[..., httpx.Response], make_bundle: Callable[..., Path],
    keys_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    enroll = make_token(service_app, "enrollment")
    bundle = make_bundle(1)
    publish_and_release(admin, bundle)
    state = tmp_path / "dev"
    csv = tmp_path / "rows.csv"
    manifest = json.loads((bundle / "manifest.json").read_text())["signed"]
    names = [f["name"] for f in manifest["model"]["features"]]
    csv.write_text(",".join(names) + "\n" + "\n".join(",".join(map(str, r)) for r in _rows(bundle)) + "\n")
    with serve_in_thread(service_app) as url:
        assert cli_main(["device", "register", "--server", url, "--enroll-token", enroll, "--state",
                         str(state), "--platform", "linux", "--root", str(keys_dir / "root.json"),
                         "--device-id", "cli-1"]) == 0
        assert cli_main(["device", "sync", "--state", str(state), "--once"]) == 0
        assert cli_main(["device", "predict", "--state", str(state), "--csv", str(csv),
                         "--out", str(tmp_path / "out.csv")]) == 0
        assert cli_main(["device", "sync", "--state", str(state)]) == 0
        assert cli_main(["device", "status", "--state", str(state)]) == 0
        assert cli_main(["device", "sync", "--state", str(state), "--loop", "--interval", "0.01",
                         "--iterations", "2"]) == 0
        assert cli_main(["device", "run", "--state", str(state), "--csv", str(csv), "--interval", "0.01",
                         "--iterations", "2"]) == 0
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
    assert out.count("not_modified") >= 3 and f"scored {len(_rows(bundle))} rows" in out
