"""The yearly renewal of docs/operations.md, end to end against a real ``serve``: a root
about to expire is announced (``keys init``/``keys show``, the service's log and
``/readyz``); ``keys renew`` and copying roots/ and root.json to the server move devices to
the new root on their next sync, with no gap: a device syncing before and after keeps
working, and a device whose clock is already past the old root's expiry recovers."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path

import httpx
import pytest

from device_sim.device import Device
from device_sim.service_process import running_service
from packager.cli import main
from packager.manifest import utcnow
from tests.deploy.conftest import prepare_database

pytestmark = pytest.mark.slow  # 5-10 s: packages a model and starts a real serve


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def _bundle(keys: Path, out: Path) -> Path:
    from packager.detectors import IsolationForestDetector
    from packager.keys import load_private_key, load_root
    from packager.package import build_and_write
    from packager.telemetry import generate_telemetry

    data = generate_telemetry(600, seed=3)
    model = IsolationForestDetector(n_estimators=10, random_state=3).fit(data.frame)
    return build_and_write(
        model, name="renewal-iforest", version=1, targets=("cpu",),
        keys=[load_private_key(keys / "publisher.key")], root=load_root(keys / "root.json"),
        out_dir=out, calibration=data.frame.to_numpy(),
    )


def _publish_root(keys: Path, server_keys: Path) -> None:
    """The procedure's copy step: the chain first, then root.json (which the service
    watches), so the service never names a version it cannot hand out."""
    shutil.copytree(keys / "roots", server_keys / "roots", dirs_exist_ok=True)
    shutil.copy(keys / "root.json", server_keys / "root.json")


def test_yearly_root_renewal_moves_devices_without_a_gap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    out = _run(capsys, "keys", "init", str(keys), "--lifetime-days", "3")
    assert "root v1 expires" in out and "(in 3 days)" in out and "warning: renew it" in out, out
    out = _run(capsys, "keys", "show", str(keys))
    assert "root v1 expires" in out and "warning: renew it" in out, out

    server_keys = tmp_path / "server-keys"
    server_keys.mkdir()
    _publish_root(keys, server_keys)
    shutil.copy(keys / "index.key", server_keys / "index.key")
    _, publisher, enroll = prepare_database(tmp_path / "data")
    bundle = _bundle(keys, tmp_path / "bundle")
    root_v1 = json.loads((keys / "root.json").read_text())
    # A device whose clock runs 4 days ahead: root v1 has already expired for it.
    ahead = utcnow() + dt.timedelta(days=4)

    with running_service(tmp_path / "data", server_keys / "root.json", server_keys / "index.key",
                         log_path=tmp_path / "service.log") as service, \
            httpx.Client(base_url=service.url, timeout=30) as http:
        ready = http.get("/readyz").json()
        assert [w["code"] for w in ready["warnings"]] == ["root_expires_soon"], ready
        assert "modelsync keys renew" in ready["warnings"][0]["detail"]
        assert "root v1 expires" in service.log_path.read_text()

        from sync_service.client import ServiceClient

        with ServiceClient(service.url, publisher) as api:
            assert api.publish(bundle)[0] == 201
        r = http.post("/v1/releases", headers={"Authorization": f"Bearer {publisher}"},
                      json={"fleet": "alpha", "channel": "stable", "model": "renewal-iforest",
                            "version": 1, "percent": 100})
        assert r.status_code == 201, r.text
        for name in ("steady", "ahead"):
            Device.register(tmp_path / name, server=service.url, enroll_token=enroll["alpha"],
                            platform="linux", root_envelope=root_v1, device_id=name)
        before = Device(tmp_path / "steady").sync()
        assert before.root_version == 1 and [o.version for o in before.installed] == [1], before
        stuck = Device(tmp_path / "ahead", now=lambda: ahead).sync()
        assert not stuck.ok and "expired" in (stuck.error or ""), stuck

        out = _run(capsys, "keys", "renew", str(keys))
        assert "root v2 expires" in out and "(in 365 days)" in out and "warning" not in out, out
        _publish_root(keys, server_keys)
        deadline = time.monotonic() + 30
        while http.get("/readyz").json()["warnings"]:
            assert time.monotonic() < deadline, "the service still warns after the new root was copied"
            time.sleep(0.1)

        after = Device(tmp_path / "steady").sync()
        assert after.ok and after.root_version == 2 and after.status == "not_modified", after
        assert Device(tmp_path / "steady").status().root_version == 2
        recovered = Device(tmp_path / "ahead", now=lambda: ahead).sync()
        assert recovered.ok and recovered.root_version == 2, recovered
        assert [o.version for o in recovered.installed] == [1], recovered
    out = _run(capsys, "keys", "show", str(keys))
    assert "root v2 expires" in out and "warning" not in out
