"""A network attacker with no keys cannot halt a rollout (docs/security.md "A path attacker
halting a rollout"): a real service on loopback, real devices whose every blob body is
spoilt or cut on the way. The devices retry, report transfer_failed, the health gate does
not count it, and once the path is clean they install the release that is still active."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel import Session

from device_sim.device import Device
from device_sim.transfer import SyncConfig
from sync_service import crud
from sync_service.core.config import Settings
from sync_service.main import create_app
from tests.device_sim.service import FLEET, make_token, publish_and_release
from tests.sync_service.live import serve_in_thread

CONFIG = SyncConfig(connect_timeout=5, read_timeout=10, deadline=60)


class PathAttacker(httpx.AsyncBaseTransport):
    """Real HTTP to the service, then every artifact body (asked for as zstd, or by Range)
    flipped in one bit or cut in half."""

    def __init__(self, mode: str) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.mode = mode
        self.ranges: list[str | None] = []  # the Range header of each spoilt request

    @property
    def spoilt(self) -> int:
        return len(self.ranges)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        # the device asks for an artifact with exactly "zstd" (httpx's default lists several)
        artifact = request.headers.get("accept-encoding") == "zstd" or "range" in request.headers
        if not artifact or response.status_code not in (200, 206):
            return response
        body = b"".join([chunk async for chunk in _aiter(response.stream)])
        await response.aclose()
        self.ranges.append(request.headers.get("range"))
        mid = len(body) // 2
        if self.mode == "flip":
            body = body[:mid] + bytes([body[mid] ^ 0x10]) + body[mid + 1 :]
            return httpx.Response(response.status_code, headers=response.headers, content=body)
        return httpx.Response(response.status_code, headers=response.headers, stream=_Cut(body[:mid]))

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _aiter(stream: httpx.AsyncByteStream | httpx.SyncByteStream) -> AsyncIterator[bytes]:
    assert isinstance(stream, httpx.AsyncByteStream)
    async for chunk in stream:
        yield chunk


class _Cut(httpx.AsyncByteStream):
    def __init__(self, head: bytes) -> None:
        self.head = head

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.head
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


@pytest.fixture
def gated_app(tmp_path: Path, keys_dir: Path) -> Iterator[FastAPI]:
    """The service with a gate that halts at 3 reporting devices: 4 spoilt ones would halt it."""
    settings = Settings(data_dir=tmp_path / "data", root_path=keys_dir / "root.json",
                        index_key_path=keys_dir / "index.key", storage_backend="local",
                        health_min_devices=3, health_failure_rate=0.05)
    application = create_app(settings)
    with Session(application.state.engine) as session:
        crud.create_fleet(session=session, name=FLEET)
        session.commit()
    yield application
    application.state.engine.dispose()


def test_spoilt_and_cut_blobs_do_not_halt_the_rollout_and_devices_recover(
    gated_app: FastAPI, make_bundle: Callable[..., Path], keys_dir: Path, tmp_path: Path,
) -> None:
    from fastapi.testclient import TestClient

    publisher = make_token(gated_app, "publisher", scopes=("publish", "release", "admin"))
    enroll = make_token(gated_app, "enrollment")
    root = json.loads((keys_dir / "root.json").read_text())
    with TestClient(gated_app) as admin_client:
        def admin(method: str, path: str, **kw: object) -> httpx.Response:
            return admin_client.request(method, path, headers={"Authorization": f"Bearer {publisher}"},
                                        **kw)  # type: ignore[arg-type]
        publish_and_release(admin, make_bundle(1))
        release = admin("GET", f"/v1/releases?fleet={FLEET}&channel=stable").json()[0]
        with serve_in_thread(gated_app) as url:
            states = [tmp_path / f"d{i}" for i in range(4)]
            for i, state in enumerate(states):
                Device.register(state, server=url, enroll_token=enroll, platform="linux", root_envelope=root,
                                device_id=f"path-{i}", config=CONFIG)
            attackers = [PathAttacker("flip" if i % 2 == 0 else "cut") for i in range(4)]
            for state, attacker in zip(states, attackers, strict=True):
                result = Device(state, transport=attacker, config=CONFIG).sync()
                [model] = result.outcomes
                assert (model.outcome, model.transport) == ("failed", True), model
                assert result.reports_sent == 1  # transfer_failed, after a second try
                assert attacker.spoilt == 2
                if attacker.mode == "flip":  # the poisoned partial is discarded, never resumed
                    assert model.reason in ("hash_mismatch", "download"), model
                    assert attacker.ranges == [None, None]
                    assert not list((state / "cache").glob("*.part"))
                else:  # a cut: tried again at once (resuming whatever whole zstd blocks arrived)
                    assert model.reason == "download", model
            status = admin("GET", f"/v1/releases/{release['id']}/status").json()
            assert status["release"]["state"] == "active", status["release"]
            assert (status["reporting_devices"], status["failing_devices"]) == (0, 0)
            # the path is clean again: every device takes the release the attacker could not stop
            for state in states:
                result = Device(state, config=CONFIG).sync()
                assert [o.version for o in result.installed] == [1], result
            status = admin("GET", f"/v1/releases/{release['id']}/status").json()
    assert status["release"]["state"] == "active" and status["installs"] == 4


class _Recording(httpx.AsyncBaseTransport):
    """Real HTTP, each request's path noted: which client carried what."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_a_damaged_transfer_is_retried_on_a_fresh_connection(
    gated_app: FastAPI, make_bundle: Callable[..., Path], keys_dir: Path, tmp_path: Path,
) -> None:
    """The first client (its pool) carried the spoilt bytes; the retry's manifest and artifact
    come through the fresh client the device supplies, and the install lands."""
    import asyncio

    from fastapi.testclient import TestClient

    from device_sim.transfer import make_client

    publisher = make_token(gated_app, "publisher", scopes=("publish", "release", "admin"))
    enroll = make_token(gated_app, "enrollment")
    root = json.loads((keys_dir / "root.json").read_text())
    with TestClient(gated_app) as admin_client:
        publish_and_release(
            lambda method, path, **kw: admin_client.request(  # type: ignore[arg-type]
                method, path, headers={"Authorization": f"Bearer {publisher}"}, **kw),
            make_bundle(1),
        )
        with serve_in_thread(gated_app) as url:
            state = tmp_path / "d"
            Device.register(state, server=url, enroll_token=enroll, platform="linux", root_envelope=root,
                            device_id="fresh-1", config=CONFIG)
            device = Device(state, config=CONFIG)
            fresh = _Recording()
            spoiling = PathAttacker("flip")

            async def sync() -> object:
                async with make_client(url, CONFIG, spoiling) as first:
                    updater = device.updater(first)
                    updater.fresh_client = lambda: make_client(url, CONFIG, fresh)
                    return await updater.sync_once()

            result = asyncio.run(sync())
    assert [o.version for o in result.installed] == [1], result  # type: ignore[attr-defined]
    assert spoiling.spoilt == 1  # only the first attempt went through the spoiling client
    # the retry from scratch, manifest and artifact (both content-addressed blobs), came fresh
    assert len([p for p in fresh.paths if p.startswith("/v1/blobs/")]) == 2, fresh.paths
