"""The fleet against a real `modelsync serve` process: convergence, rollout buckets, bytes,
refusals by old runtimes, and the health gate halting a bad build."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from device_sim.demo import ServiceHandle, demo_service
from device_sim.fleet import OLD_RUNTIME, Fleet, FleetSpec, default_state_root, plan_devices
from device_sim.fleet_report import write_report
from packager.keys import load_private_key
from packager.manifest import sha256_hex, sign
from packager.rollout import rollout_bucket
from tests.conftest import MakeBundle

MODEL = "fleet-iforest"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> Iterator[ServiceHandle]:
    with demo_service(tmp_path_factory.mktemp("fleet-service"), keys_dir) as svc:
        yield svc


def _fleet_in(service: ServiceHandle, name: str) -> ServiceHandle:
    handle = dataclasses.replace(service, fleet=name, releases={})
    handle.setup_fleet()
    return handle


def _spec(svc: ServiceHandle, devices: int, **kw: object) -> FleetSpec:
    base: dict[str, object] = {
        "devices": devices, "server": svc.url, "enroll_token": svc.enroll_token,
        "root_envelope": svc.root_envelope(), "poll_interval_s": 1.5, "seed": 3,
        "offline_start_within_s": 4.0, "sample_every_s": 0.25, "state_root": default_state_root(),
        "device_prefix": svc.fleet,
    }
    base.update(kw)
    return FleetSpec(**base)  # type: ignore[arg-type]


def test_plan_is_deterministic_and_mixed() -> None:
    spec = FleetSpec(devices=400, server="http://x", enroll_token="t", root_envelope={}, seed=9)
    a, b = plan_devices(spec), plan_devices(spec)
    assert [(d.device_id, d.platform, d.network, d.offline) for d in a] == [
        (d.device_id, d.platform, d.network, d.offline) for d in b
    ]
    assert {d.platform for d in a} == {"android", "ios", "linux"}
    assert {d.network for d in a} == {"wifi", "cellular", "lossy"}
    assert 0 < sum(d.ort_version == OLD_RUNTIME for d in a) < 30
    assert all(d.wifi_at is not None for d in a if d.network == "cellular")


def test_fleet_converges_and_buckets_match(
    service: ServiceHandle, make_bundle: MakeBundle, tmp_path: Path
) -> None:
    svc = _fleet_in(service, "conv")
    svc.publish(make_bundle(1))
    svc.publish(make_bundle(2))
    svc.release(MODEL, 1, 100)
    fleet = Fleet(_spec(svc, 100, old_runtime_share=0.05))
    eligible = fleet.eligible()
    old = [d for d in fleet.devices if d.old_runtime]
    assert old, "the seed must give a few old-runtime devices"

    async def scenario() -> tuple[bool, bool, bool, float]:
        await fleet.start()
        try:
            v1 = await fleet.wait(lambda: fleet.share_on(MODEL, 1) >= 1.0, 40)
            rel = await asyncio.to_thread(svc.release, MODEL, 2, 30)
            in_bucket = {d.device_id for d in eligible if rollout_bucket(rel["salt"], d.device_id) < 3000}

            def staged() -> bool:
                return all(d.installed.get(MODEL) == 2 for d in eligible if d.device_id in in_bucket)

            v2_staged = await fleet.wait(staged, 40)
            await asyncio.sleep(3.0)  # two more polls: nobody outside the bucket may move
            outside = [d for d in eligible if d.device_id not in in_bucket and d.installed.get(MODEL) == 2]
            assert outside == []
            share = fleet.share_on(MODEL, 2)
            await asyncio.to_thread(svc.set_percent, MODEL, 2, 100)
            v2 = await fleet.wait(lambda: fleet.share_on(MODEL, 2) >= 1.0, 40)
            # the service learns from reports, which a lossy link may delay by a poll or two
            for _ in range(40):
                status = await asyncio.to_thread(svc.status, MODEL, 2)
                if status["devices_by_version"].get("2") == len(eligible):
                    break
                await asyncio.sleep(0.5)
            return v1, v2_staged, v2, share
        finally:
            await fleet.stop()

    v1, staged, v2, share = asyncio.run(scenario())
    result = fleet.result
    assert v1 and staged and v2
    bucket = next(b for b in result.buckets if b.version == 2 and b.percent == 30)
    assert share == pytest.approx(bucket.expected_share)
    assert 0.15 < bucket.expected_share < 0.45
    assert bucket.installed_outside == 0
    assert result.unexpected_errors == {}
    assert all(d.installed.get(MODEL) is None for d in old)  # check 3.7 held on every sync
    assert result.failures_by_reason == {"runtime_too_old": len(old)}
    assert result.bytes_by_kind.get("zstd", 0) > 0 and result.bytes_by_kind.get("delta", 0) > 0
    assert result.converged["release"] == f"{MODEL} v2"
    assert "not reached" not in result.converged["time to 100% of eligible"]
    status = svc.status(MODEL, 2)
    assert status["devices_by_version"].get("2") == len(eligible)
    assert status["release"]["state"] == "active"  # the refusals did not trip the health gate

    paths = write_report(result, tmp_path / "report")
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = paths["summary"].read_text()
    assert "Rollout buckets" in summary and "runtime_too_old" in summary
    figures = json.loads(paths["json"].read_text())
    assert figures["devices"] == 100 and figures["timeline"]


def _bad_build(good: Path, other: Path, target: str, keys_dir: Path, out: Path) -> Path:
    """A build-pipeline accident: `target`'s artifact is another model's, yet the manifest is
    properly signed. Only the golden vectors on the device can catch it."""
    shutil.copytree(good, out)
    envelope = json.loads((out / "manifest.json").read_text())
    signed = envelope["signed"]
    other_signed = json.loads((other / "manifest.json").read_text())["signed"]
    art = next(a for a in signed["artifacts"] if a["target"] == target)
    wrong = next(a for a in other_signed["artifacts"] if a["target"] == target)
    data = (other / wrong["path"]).read_bytes()
    if not any(a is not art and a["path"] == art["path"] for a in signed["artifacts"]):
        (out / art["path"]).unlink()  # identical artifacts of two targets share one file
    packed = zstandard.ZstdCompressor(level=art["compressed"]["level"]).compress(data)
    art.update(path=wrong["path"], sha256=sha256_hex(data), length=len(data))
    art["compressed"].update(length=len(packed), sha256=sha256_hex(packed))
    (out / wrong["path"]).write_bytes(data)
    key = load_private_key(keys_dir / "publisher.key")
    (out / "manifest.json").write_text(json.dumps(sign(signed, [key])))
    return out


def test_health_gate_halts_a_bad_build(
    service: ServiceHandle, make_bundle: MakeBundle, keys_dir: Path, tmp_path: Path
) -> None:
    svc = _fleet_in(service, "gate")
    svc.publish(make_bundle(1))
    bad = _bad_build(make_bundle(3), make_bundle(1), "ios-coreml", keys_dir, tmp_path / "bad-v3")
    svc.publish(bad)
    svc.release(MODEL, 1, 100)
    fleet = Fleet(_spec(svc, 60, networks={"wifi": 1.0}, offline_share=0.0, old_runtime_share=0.05, seed=5))

    def withdrawn() -> bool:
        return bool(fleet.index_versions) and all(
            e.version != 3 for e in fleet.index_versions[-1][2]
        ) and any(e.version == 3 for _, _, es in fleet.index_versions for e in es)

    async def scenario() -> bool:
        await fleet.start()
        try:
            await fleet.wait(lambda: fleet.share_on(MODEL, 1) >= 1.0, 40)
            await asyncio.to_thread(svc.release, MODEL, 3, 100)
            halted = await fleet.wait(withdrawn, 40)
            await asyncio.sleep(1.0)
            return halted
        finally:
            # drained: a device whose report reached the service finishes its sync (and is
            # counted here) before the counts are compared below
            await fleet.stop(drain_s=60)

    assert asyncio.run(scenario())
    result = fleet.result
    gate = result.health_gate[f"{MODEL} v3"]
    assert gate["halted"] is True
    assert set(gate["golden_failed devices by platform"]) == {"ios"}
    assert result.unexpected_errors == {}
    # ios devices kept serving v1: the failed version was never activated
    ios = [d for d in fleet.eligible() if d.platform == "ios"]
    assert ios and all(d.installed.get(MODEL) == 1 for d in ios)
    status = svc.status(MODEL, 3)
    assert status["release"]["state"] == "halted"
    assert status["halted_by_health_gate"] is True
    # the service lists every reason; only golden_vector counted towards the halt
    assert status["failures_by_reason"]["golden_vector"] == gate["golden_failed devices by platform"]["ios"]


def test_fleet_cli_writes_its_report(
    service: ServiceHandle, make_bundle: MakeBundle, keys_dir: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from packager.cli import main

    monkeypatch.delenv("MODELSYNC_ENROLL_TOKEN", raising=False)
    svc = _fleet_in(service, "cli")
    svc.publish(make_bundle(1))
    svc.release(MODEL, 1, 100)
    out = tmp_path / "out"
    code = main(["fleet", "--devices", "12", "--server", svc.url, "--enroll-token", svc.enroll_token,
                 "--root", str(keys_dir / "root.json"), "--duration", "6", "--poll-interval", "1",
                 "--networks", "wifi=1", "--old-runtime-share", "0", "--offline-share", "0",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr()
    figures = json.loads((out / "fleet.json").read_text())
    assert figures["devices"] == 12 and figures["unexpected_errors"] == {}
    assert figures["converged"]["on it at the end"] == "100.00%"
    assert (out / "convergence.png").exists() and (out / "summary.md").exists()
    assert main(["fleet", "--server", svc.url, "--devices", "3"]) == 2  # no enrollment token
    assert "--enroll-token" in capsys.readouterr().err
