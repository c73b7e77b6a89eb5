"""Under every injected fault the device ends with the new model verified or the previous
one whole, never a corrupt one, and never runs past its deadline. Many seeded trials."""

from __future__ import annotations

import json
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from device_sim.device import Device
from device_sim.faults import FaultPlan, FaultyTransport
from device_sim.store import TMP_MARK, Store
from device_sim.transfer import SyncConfig
from tests.device_sim.forge import ort_model
from tests.device_sim.repo import Repo
from tests.device_sim.service import admin, make_token, publish_and_release, service_app

__all__ = ["admin", "service_app"]  # fixtures

TRIALS = 100
CONFIG = SyncConfig(connect_timeout=0.05, read_timeout=0.05, deadline=0.4)


def _serve(body: bytes) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=httpx.ByteStream(body), headers={"Content-Length": str(len(body))})

    return httpx.MockTransport(handler)


def test_cut_flip_burst_and_hang_on_a_sync_client() -> None:
    body = bytes(range(256)) * 40
    cut = FaultyTransport(_serve(body), FaultPlan(cut=1.0), random.Random(1))
    with httpx.Client(transport=cut) as client, pytest.raises(httpx.RemoteProtocolError):
        client.get("http://x/")
    assert cut.log.cuts == 1

    flip = FaultyTransport(_serve(body), FaultPlan(flip=1.0), random.Random(2))
    with httpx.Client(transport=flip) as client:
        got = client.get("http://x/").content
    diff = [i for i, (a, b) in enumerate(zip(got, body, strict=True)) if a != b]
    assert len(got) == len(body) and len(diff) == 1 and bin(got[diff[0]] ^ body[diff[0]]).count("1") == 1

    burst = FaultyTransport(_serve(body), FaultPlan(error=1.0, burst=3), random.Random(3))
    with httpx.Client(transport=burst) as client:
        assert [client.get("http://x/").status_code >= 500 for _ in range(3)] == [True] * 3

    hang = FaultyTransport(_serve(body), FaultPlan(hang=1.0), random.Random(4))
    start = time.monotonic()
    with httpx.Client(transport=hang, timeout=0.1) as client, pytest.raises(httpx.ReadTimeout):
        client.get("http://x/")
    assert 0.09 <= time.monotonic() - start < 3.0  # generous: the machine is shared


async def test_bandwidth_cap_and_latency_on_an_async_client() -> None:
    body = b"x" * 20_000
    slow = FaultyTransport(_serve(body), FaultPlan(bandwidth=100_000, latency=0.05), random.Random(5))
    start = time.monotonic()
    async with httpx.AsyncClient(transport=slow) as client:
        assert (await client.get("http://x/")).content == body
    assert time.monotonic() - start >= 0.05 + 0.2 * 0.9


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Repo, Path]:
    """A device with v1 installed, and v2 published."""
    repo = Repo()
    repo.publish("m", 1, ort_model(1.0), index_version=1)
    state = tmp_path_factory.mktemp("faults") / "base"
    device = Device.register(state, server="http://repo.test", enroll_token="mse_good", platform="linux",
                             root_envelope=json.loads(repo.roots[1]), device_id="dev-f",
                             transport=repo.transport(), config=CONFIG)
    assert device.sync().installed
    repo.publish("m", 2, ort_model(2.0), index_version=2)
    return repo, state


@pytest.mark.slow
def test_random_faults_never_leave_a_corrupt_model(base: tuple[Repo, Path], tmp_path: Path) -> None:
    repo, state = base
    rng = random.Random(20261125)
    expected = {1: ort_model(1.0), 2: ort_model(2.0)}
    outcomes: Counter[str] = Counter()
    injected: Counter[str] = Counter()
    for trial in range(TRIALS):
        d = tmp_path / f"t{trial}"
        shutil.copytree(state, d)
        plan = FaultPlan.random(rng)
        faulty = FaultyTransport(repo.transport(), plan, random.Random(rng.random()))
        device = Device(d, transport=faulty, config=CONFIG)
        for _attempt in range(2):  # a second sync resumes what the first left in cache/
            start = time.monotonic()
            result = device.sync()
            # sync and report flush each get the deadline; golden vectors run in between
            assert time.monotonic() - start < 2 * CONFIG.deadline + 2.0, (trial, plan)
            outcomes[result.status if not result.installed else "installed"] += 1
        store = Store.open(d)
        serving = store.usable("m")
        assert serving is not None, (trial, plan)
        assert store.artifact_path(serving).read_bytes() == expected[serving.version], (trial, plan)
        assert device.predict([[1.0, 1.0, 1.0]]).labels.tolist() == [1]
        assert not list(d.rglob(f"*{TMP_MARK}*"))
        for key in ("cuts", "flips", "errors", "hangs"):
            injected[key] += getattr(faulty.log, key)
        shutil.rmtree(d)
    # the trials did meet every fault, and both endings happened
    assert all(injected[k] > 0 for k in ("cuts", "flips", "errors", "hangs")), injected
    assert outcomes["installed"] > 0 and sum(v for k, v in outcomes.items() if k != "installed") > 0, outcomes


@pytest.mark.slow
def test_random_faults_against_the_real_service(
    service_app: FastAPI, admin: Callable[..., httpx.Response], make_bundle: Callable[..., Path],
    keys_dir: Path, tmp_path: Path,
) -> None:
    """Fewer trials, real bundles: the service's own Range, zstd and delta answers, faulted."""
    publish_and_release(admin, make_bundle(1))
    config = SyncConfig(connect_timeout=0.2, read_timeout=0.2, deadline=2.0)
    base = Device.register(tmp_path / "base", server="http://service.test",
                           enroll_token=make_token(service_app, "enrollment"), platform="android",
                           root_envelope=json.loads((keys_dir / "root.json").read_text()),
                           transport=httpx.ASGITransport(app=service_app), config=config)
    assert base.sync().installed
    publish_and_release(admin, make_bundle(2))
    rng = random.Random(7)
    versions: Counter[int] = Counter()
    for trial in range(25):
        d = tmp_path / f"t{trial}"
        shutil.copytree(base.store.root, d)
        plan = FaultPlan.random(rng, min_bandwidth=5_000_000)
        faulty = FaultyTransport(httpx.ASGITransport(app=service_app), plan, random.Random(rng.random()))
        device = Device(d, transport=faulty, config=config)
        for _attempt in range(2):
            start = time.monotonic()
            device.sync()
            assert time.monotonic() - start < 2 * config.deadline + 3.0, (trial, plan)
        store = Store.open(d)
        serving = store.usable("fleet-iforest")
        assert serving is not None and serving.version in (1, 2), (trial, plan)
        assert store.intact(serving)
        assert len(device.predict(np.zeros((3, len(device.manifest(serving).model.features))))) == 3
        versions[serving.version] += 1
        shutil.rmtree(d)
    assert versions[2] > 0, versions
