"""The Python device against the real service on SQLite and PostgreSQL (in process, real
onnxruntime; docs/behaviour.md "Shadow runs"): a held candidate never changes what the device
acts on, its agreement report reaches the service, a halted shadow is dropped with its
window reported, and promote installs the held files with no blob byte served."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient

from device_sim.device import Device
from device_sim.transfer import SyncConfig
from packager.manifest import ModelManifest
from tests.sync_service.fleet_helpers import create_release, publish

MODEL = "fleet-iforest"


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
    app: FastAPI, client: TestClient, auth: dict[str, str], enrollment_token: str,
    make_bundle: Callable[..., Path], server_keys: Path, tmp_path: Path,
) -> None:
    admin = _admin(client, auth)
    transport = _Counting(httpx.ASGITransport(app=app))
    device = await _device_on_v1(client, auth, make_bundle(1), enrollment_token, server_keys, tmp_path,
                                 transport)
    rows = _rows(make_bundle(1))
    alone = device.predict(rows)

    shadow = _shadow(client, auth, make_bundle(2), rows=len(rows) * 3)
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
    app: FastAPI, client: TestClient, auth: dict[str, str], enrollment_token: str,
    make_bundle: Callable[..., Path], server_keys: Path, tmp_path: Path,
) -> None:
    admin = _admin(client, auth)
    device = await _device_on_v1(client, auth, make_bundle(1), enrollment_token, server_keys, tmp_path,
                                 httpx.ASGITransport(app=app))
    shadow = _shadow(client, auth, make_bundle(2), rows=10_000)
    assert [o.outcome for o in (await device.async_sync()).shadows] == ["held"]
    rows = _rows(make_bundle(1))
    device.predict(rows)
    assert not [e for _, e in device.store.queued() if e["kind"] == "shadow"]  # 10,000 rows not reached
    for _ in range(2):  # syncs with no row scored between them: the window is neither due nor sent
        await device.async_sync()
    assert admin("GET", f"/v1/releases/{shadow['id']}/behaviour").json()["shadow"]["rows"] == 0
    assert admin("POST", f"/v1/releases/{shadow['id']}/halt", json={"reason": "enough"}).status_code == 200
    await device.async_sync()
    assert device.store.held_shadow("fleet-iforest") is None
    assert not (device.store.root / "shadow" / "fleet-iforest").exists()
    [pending] = [e for _, e in device.store.queued() if e["kind"] == "shadow"]
    assert pending["data"]["rows"] == len(rows)
    assert device.status().models[0].current == 1  # it never acted on v2
    await device.async_sync()
    assert admin("GET", f"/v1/releases/{shadow['id']}/behaviour").json()["shadow"]["rows"] == len(rows)


async def _device_on_v1(client: TestClient, auth: dict[str, str], v1: Path, enrollment_token: str,
                        server_keys: Path, tmp_path: Path, transport: httpx.AsyncBaseTransport) -> Device:
    """v1 released to everyone, and a device that has installed it."""
    publish(client, auth, v1)
    create_release(client, auth, model=MODEL, version=1, percent=100)
    device = await Device.async_register(
        tmp_path / "dev", server="http://service.test", enroll_token=enrollment_token,
        platform="linux", root_envelope=json.loads((server_keys / "root.json").read_text()),
        transport=transport, config=SyncConfig(deadline=60))
    await device.async_sync()
    return device


def _admin(client: TestClient, auth: dict[str, str]) -> Callable[..., httpx.Response]:
    def call(method: str, path: str, **kw: Any) -> httpx.Response:
        resp: httpx.Response = client.request(method, path, headers=auth, **kw)
        return resp
    return call


def _shadow(client: TestClient, auth: dict[str, str], bundle: Path, rows: int) -> dict[str, Any]:
    publish(client, auth, bundle)
    version = json.loads((bundle / "manifest.json").read_text())["signed"]["version"]
    r = client.post("/v1/releases", headers=auth, json={
        "fleet": "field", "channel": "stable", "model": MODEL, "version": version, "percent": 100,
        "mode": "shadow", "report_after": {"rows": rows, "hours": 24}})
    assert r.status_code == 201, r.text
    return dict(r.json())
