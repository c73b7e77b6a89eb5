"""A report the service will never take must not hold back the queue: the real service
(in process, SQLite) refuses a batch whole with 422 when one event in it is invalid; the
device halves the batch until that event stands alone, drops it, counts it, and the rest
arrive. Any other refusal keeps the batch queued."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from fastapi import FastAPI

from device_sim.device import Device
from device_sim.transfer import SyncConfig
from tests.device_sim.service import admin, make_token, publish_and_release, service_app

__all__ = ["admin", "service_app"]  # fixtures


class _ReportsDown(httpx.AsyncBaseTransport):
    """The network in front of the service: reports answered 503 while ``down``."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.down = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down and request.url.path.endswith("/reports"):
            return httpx.Response(503, json={"detail": "maintenance"})
        return await self.inner.handle_async_request(request)


async def test_one_refused_event_is_dropped_and_the_rest_arrive(
    service_app: FastAPI, admin: Callable[..., httpx.Response], make_bundle: Callable[..., Path],
    keys_dir: Path, tmp_path: Path,
) -> None:
    publish_and_release(admin, make_bundle(1))
    transport = _ReportsDown(httpx.ASGITransport(app=service_app))
    device = await Device.async_register(
        tmp_path / "dev", server="http://service.test", enroll_token=make_token(service_app, "enrollment"),
        platform="linux", root_envelope=json.loads((keys_dir / "root.json").read_text()),
        transport=transport, config=SyncConfig(deadline=60))
    assert [o.version for o in (await device.async_sync()).installed] == [1]
    device_id = device.store.identity.device_id

    def history() -> set[uuid.UUID]:
        got = admin("GET", f"/v1/devices/{device_id}/history?limit=500")
        assert got.status_code == 200, got.text
        return {uuid.UUID(e["event_id"]) for e in got.json()}

    def ids(events: list[dict[str, object]]) -> set[uuid.UUID]:
        return {uuid.UUID(str(e["event_id"])) for e in events}

    before = history()
    good = [device.store.enqueue("stale_index", reason="stale_index") for _ in range(5)]
    # v7 was never installed here: the service refuses any batch holding this with 422
    poisoned = device.store.enqueue("behaviour", model="fleet-iforest", version=7, data={
        "rows": 10, "anomalies": 1, "calls": 1, "histogram": [1] * 10,
        "latency_ms": {"p50": 1.0, "p95": 2.0}, "provider": "CPUExecutionProvider"})
    good += [device.store.enqueue("stale_index", reason="stale_index") for _ in range(3)]
    probe = httpx.AsyncClient(transport=transport, base_url="http://service.test")
    sent = await device.updater(probe).flush_reports()
    arrived = history() - before
    assert sent == 8 and arrived == ids(good)
    status = device.status()
    assert (status.queued_reports, status.refused_reports) == (0, 1)
    refused = device.store.refused_reports()
    assert refused["last_kind"] == "behaviour" and "422" in refused["last_error"]
    assert not ids([poisoned]) & history()

    # a refusal that is not about the batch (503) keeps it queued, nothing dropped
    transport.down = True
    later = device.store.enqueue("stale_index", reason="stale_index")
    result = await device.async_sync(probe)
    assert result.reports_sent == 0
    assert (device.status().queued_reports, device.status().refused_reports) == (1, 1)
    transport.down = False
    assert (await device.async_sync(probe)).reports_sent == 1
    assert ids([later]) <= history()
    await probe.aclose()
