"""The device against the real sync service: in-process (httpx.ASGITransport) and on a
real uvicorn server on loopback through the `modelsync device` CLI. Real bundles (a small
IsolationForest from tests/conftest.py's make_bundle), real SQLite, real onnxruntime."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from device_sim.device import Device
from device_sim.transfer import SyncConfig
from packager.cli import main as cli_main
from packager.manifest import ModelManifest
from tests.device_sim.service import FLEET, admin, make_token, publish_and_release, service_app
from tests.sync_service.live import serve_in_thread

__all__ = ["admin", "service_app"]  # fixtures


def _rows(bundle: Path) -> np.ndarray:
    manifest = ModelManifest.model_validate(json.loads((bundle / "manifest.json").read_text())["signed"])
    return np.asarray(manifest.golden.inputs, dtype=np.float32)


@pytest.mark.slow
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
        assert cli_main(["device", "sync", "--state", str(state), "--once"]) == 10  # UPDATED
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
    assert bad == 6 and "registration refused: HTTP 401" in err
    assert not (tmp_path / "other").exists()
    assert (tmp_path / "out.csv").read_text().splitlines()[0] == "label,score"
    assert out.count("not_modified") >= 3 and f"scored {len(_rows(bundle))} rows" in out


@pytest.mark.slow
def test_presigned_s3_downloads_with_resume(
    keys_dir: Path, make_bundle: Callable[[int], Path], tmp_path: Path,
) -> None:
    """S3 backend with presigned downloads: the service answers 307, the device follows to
    moto's S3 over real HTTP without its bearer token, and resumes a partial file there."""
    from fastapi.testclient import TestClient

    from device_sim.store import Store
    from sync_service.core.config import Settings
    from sync_service.main import create_app
    from tests.device_sim.service import FLEET as fleet_name
    from tests.sync_service.s3_server import moto_s3, new_bucket

    with moto_s3() as endpoint:
        bucket, _ = new_bucket(endpoint)
        settings = Settings(data_dir=tmp_path / "data", root_path=keys_dir / "root.json",
                            index_key_path=keys_dir / "index.key", storage_backend="s3", s3_bucket=bucket,
                            s3_endpoint_url=endpoint, s3_region="us-east-1", s3_presigned_downloads=True)
        app = create_app(settings)
        try:
            from sqlmodel import Session

            from sync_service import crud

            with Session(app.state.engine) as session:
                crud.create_fleet(session=session, name=fleet_name)
                session.commit()
            ptoken = make_token(app, "publisher", scopes=("publish", "release", "admin"))
            with TestClient(app) as client:
                def call(method: str, path: str, **kw: Any) -> httpx.Response:
                    resp: httpx.Response = client.request(
                        method, path, headers={"Authorization": f"Bearer {ptoken}"}, **kw)
                    return resp
                bundle = make_bundle(1)
                publish_and_release(call, bundle)
            manifest = ModelManifest.model_validate(
                json.loads((bundle / "manifest.json").read_text())["signed"])
            art = next(a for a in manifest.artifacts if a.target == "cpu")
            wire = _Recorder()
            with serve_in_thread(app) as url:
                device = Device.register(
                    tmp_path / "dev", server=url, enroll_token=make_token(app, "enrollment"),
                    platform="linux", root_envelope=json.loads((keys_dir / "root.json").read_text()),
                    transport=wire)
                device.store.partial_path(art.sha256).write_bytes((bundle / art.path).read_bytes()[:5000])
                result = device.sync()
            assert [(o.outcome, o.transfer) for o in result.outcomes] == [("installed", "resumed")], result
            blob = [(h, status, auth, rng) for h, path, status, auth, rng in wire.seen if art.sha256 in path]
            service_host = httpx.URL(url).netloc.decode()
            assert (service_host, 307, True, "bytes=5000-") in blob
            assert (httpx.URL(endpoint).netloc.decode(), 206, False, "bytes=5000-") in blob
            serving = Store.open(tmp_path / "dev").usable(manifest.name)
            assert serving is not None and serving.artifact_sha256 == art.sha256
        finally:
            app.state.engine.dispose()


class _Recorder(httpx.AsyncBaseTransport):
    """Real HTTP, with a note of each request's host, path, status, bearer and Range."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.seen: list[tuple[str, str, int, bool, str | None]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        self.seen.append((request.url.netloc.decode(), request.url.path, response.status_code,
                          "authorization" in request.headers, request.headers.get("range")))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()
