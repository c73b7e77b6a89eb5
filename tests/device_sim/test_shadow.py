"""Shadow runs on the Python device (device_sim/shadow.py, check 2.7 in updater.py): the shared
vectors (tests/vectors/shadow.json), and against the real service (in process, SQLite, real
onnxruntime): a held candidate never changes what the device acts on, its agreement report
reaches the service, a halted shadow is dropped, and promote installs the held files with no
blob byte downloaded."""

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
from device_sim.shadow import AgreementWindow
from device_sim.transfer import SyncConfig
from packager.manifest import ModelManifest, ShadowEntry
from packager.rollout import pick_shadow
from tests.device_sim.service import admin, make_token, publish_and_release, service_app

__all__ = ["admin", "service_app"]  # fixtures
VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "shadow.json").read_text())
SHA = "0" * 64


@pytest.mark.parametrize("case", VECTORS["windows"], ids=lambda c: c["name"])
def test_agreement_windows_match_the_vectors(case: dict[str, Any]) -> None:
    window = AgreementWindow(candidate=2, active_version=1, since="2026-01-01T00:00:00Z")
    for call in case["calls"]:
        rows = np.asarray(call, dtype=np.float64)
        window.observe(rows[:, 1].astype(np.int64), rows[:, 0], rows[:, 3].astype(np.int64), rows[:, 2])
    got = window.report()
    assert got.pop("since") == "2026-01-01T00:00:00Z" and got.pop("active_version") == 1
    assert got == case["expected"]


@pytest.mark.parametrize("case", VECTORS["pick"], ids=lambda c: c["name"])
def test_the_shadow_a_device_holds_matches_the_vectors(case: dict[str, Any]) -> None:
    entries = [ShadowEntry.model_validate({
        "model": "m", "version": e["version"], "rollout": e["rollout"],
        "manifest": {"path": f"blobs/{SHA}", "length": 1, "sha256": SHA},
        "report_after": {"rows": 10, "hours": 1}}) for e in case["entries"]]
    got = pick_shadow(entries, case["device_id"], case["runs_version"], set(case["failed"]))
    assert (got.version if got else None) == case["expected_version"]


class _Counting(httpx.AsyncBaseTransport):
    """The network in front of the service, counting the blob bytes it carries."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.blob_bytes = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        resp = await self.inner.handle_async_request(request)
        if "/v1/blobs/" not in request.url.path:
            return resp
        inner, counter = resp.stream, self

        class Counted(httpx.AsyncByteStream):
            async def __aiter__(self) -> Any:
                async for chunk in inner:  # type: ignore[union-attr]
                    counter.blob_bytes += len(chunk)
                    yield chunk

            async def aclose(self) -> None:
                await inner.aclose()  # type: ignore[union-attr]

        return httpx.Response(resp.status_code, headers=resp.headers, stream=Counted(), request=request)


def _rows(bundle: Path) -> np.ndarray:
    manifest = ModelManifest.model_validate(json.loads((bundle / "manifest.json").read_text())["signed"])
    return np.asarray(manifest.golden.inputs, dtype=np.float32)


async def test_a_held_shadow_runs_beside_and_promote_installs_it_without_a_download(
    service_app: FastAPI, admin: Callable[..., httpx.Response], make_bundle: Callable[..., Path],
    keys_dir: Path, tmp_path: Path,
) -> None:
    publish_and_release(admin, make_bundle(1))
    transport = _Counting(httpx.ASGITransport(app=service_app))
    device = await Device.async_register(
        tmp_path / "dev", server="http://service.test", enroll_token=make_token(service_app, "enrollment"),
        platform="linux", root_envelope=json.loads((keys_dir / "root.json").read_text()),
        transport=transport, config=SyncConfig(deadline=60))
    await device.async_sync()
    rows = _rows(make_bundle(1))
    alone = device.predict(rows)

    shadow = _shadow(admin, make_bundle(2), rows=len(rows) * 3)
    result = await device.async_sync()
    assert [(o.version, o.outcome) for o in result.shadows] == [(2, "held")]
    assert device.status().models[0].current == 1
    held = device.store.held_shadow("fleet-iforest")
    assert held is not None and held.inst.version == 2

    # the app's answers are the active model's, call after call
    for _ in range(3):
        beside = device.predict(rows)
        assert np.array_equal(beside.labels, alone.labels) and np.array_equal(beside.scores, alone.scores)
    queued = [e for _, e in device.store.queued() if e["kind"] == "shadow"]
    assert len(queued) == 1 and queued[0]["version"] == 2
    data = queued[0]["data"]
    assert data["rows"] == 3 * len(rows) and data["active_version"] == 1
    assert data["active_anomalies"] == 3 * alone.anomalies
    await device.async_sync()  # sends it
    behaviour = admin("GET", f"/v1/releases/{shadow['id']}/behaviour").json()
    assert behaviour["shadow"]["rows"] == 3 * len(rows) and behaviour["shadow"]["devices"] == 1

    # promote: the held files are installed, not one blob byte downloaded
    promoted = admin("POST", f"/v1/releases/{shadow['id']}/promote", json={})
    assert promoted.status_code == 200, promoted.text
    before = transport.blob_bytes
    result = await device.async_sync()
    assert [(o.version, o.outcome, o.transfer) for o in result.installed] == [(2, "installed", "held")]
    assert transport.blob_bytes == before
    assert device.store.held_shadow("fleet-iforest") is None
    assert device.status().models[0].current == 2
    status = admin("GET", f"/v1/releases/{shadow['id']}/status").json()
    assert status["installs"] == 1


async def test_a_halted_shadow_is_dropped_and_its_window_reported(
    service_app: FastAPI, admin: Callable[..., httpx.Response], make_bundle: Callable[..., Path],
    keys_dir: Path, tmp_path: Path,
) -> None:
    publish_and_release(admin, make_bundle(1))
    device = await Device.async_register(
        tmp_path / "dev", server="http://service.test", enroll_token=make_token(service_app, "enrollment"),
        platform="linux", root_envelope=json.loads((keys_dir / "root.json").read_text()),
        transport=httpx.ASGITransport(app=service_app), config=SyncConfig(deadline=60))
    await device.async_sync()
    shadow = _shadow(admin, make_bundle(2), rows=10_000)
    assert [o.outcome for o in (await device.async_sync()).shadows] == ["held"]
    rows = _rows(make_bundle(1))
    device.predict(rows)
    assert not [e for _, e in device.store.queued() if e["kind"] == "shadow"]  # 10,000 rows not reached
    assert admin("POST", f"/v1/releases/{shadow['id']}/halt", json={"reason": "enough"}).status_code == 200
    await device.async_sync()
    assert device.store.held_shadow("fleet-iforest") is None
    assert not (device.store.root / "shadow" / "fleet-iforest").exists()
    [pending] = [e for _, e in device.store.queued() if e["kind"] == "shadow"]
    assert pending["data"]["rows"] == len(rows)
    assert device.status().models[0].current == 1  # it never acted on v2
    await device.async_sync()
    assert admin("GET", f"/v1/releases/{shadow['id']}/behaviour").json()["shadow"]["rows"] == len(rows)


def _shadow(admin: Callable[..., httpx.Response], bundle: Path, rows: int) -> dict[str, Any]:
    assert admin("POST", "/v1/bundles", content=_tar(bundle)).status_code in (200, 201)
    version = json.loads((bundle / "manifest.json").read_text())["signed"]["version"]
    r = admin("POST", "/v1/releases", json={
        "fleet": "field", "channel": "stable", "model": "fleet-iforest", "version": version, "percent": 100,
        "mode": "shadow", "report_after": {"rows": rows, "hours": 24}})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _tar(bundle: Path) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in sorted(bundle.iterdir()):
            tar.add(f, arcname=f.name)
    return buf.getvalue()
