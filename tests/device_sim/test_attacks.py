"""One test per attack (python-tuf style): each asserts the precise error and that the
device's saved trust state and installed models did not change.

The server here is an attacker's: a repository transport serving documents forged with
test keys (tests/device_sim/repo.py). The honest paths run against the real service in
test_updater.py / test_device_service.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device_sim.device import Device
from device_sim.transfer import SyncConfig
from tests.device_sim.forge import Keys, doc_bytes, entry, index_doc, manifest_doc, ort_model, root_doc, sha
from tests.device_sim.repo import Repo

# generous enough for an honest in-process sync on a loaded machine; the trickle below
# would take over a minute, so the deadline still has to cut it
CONFIG = SyncConfig(connect_timeout=2.0, read_timeout=2.0, deadline=5.0)


def snapshot(device: Device, index: bool = True) -> dict[str, str]:
    """sha256 of every file of trusted state: root, installed models, and the saved index."""
    root = device.store.root
    files = [root / "root.json", *sorted((root / "models").rglob("*"))]
    if index:
        files += sorted(p for p in (root / "index").glob("*.json") if not p.name.endswith(".stale.json"))
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files if p.is_file()}


@pytest.fixture
def repo() -> Repo:
    repo = Repo(deltas=False)
    repo.publish("m", 1, ort_model(1.0), index_version=1)
    return repo


@pytest.fixture
def device(repo: Repo, tmp_path: Path) -> Device:
    device = Device.register(tmp_path / "d", server="http://repo.test", enroll_token="mse_good",
                             platform="linux", root_envelope=json.loads(repo.roots[1]), device_id="dev-a",
                             transport=repo.transport(), config=CONFIG)
    assert device.sync().installed
    return device


def _model_failure(device: Device, index: bool = False) -> tuple[str | None, dict[str, str]]:
    before = snapshot(device, index)
    result = device.sync()
    assert not result.installed
    assert device.store.installed_versions() == {"m": 1}
    assert snapshot(device, index) == before
    reason = result.outcomes[0].reason if result.outcomes else result.error_code
    return reason, before


def _index_failure(device: Device) -> str | None:
    before = snapshot(device)
    result = device.sync()
    assert result.status == "failed" and not result.outcomes
    assert snapshot(device) == before
    return result.error_code


# ---------------------------------------------------------------- artifacts and manifests


def test_tampered_artifact(repo: Repo, device: Device) -> None:
    repo.publish("m", 2, ort_model(2.0), index_version=2)
    good = ort_model(2.0)
    repo.blobs[sha(good)] = good[:100] + bytes([good[100] ^ 0x40]) + good[101:]
    reason, _ = _model_failure(device)
    assert reason == "hash_mismatch"
    # tried twice, from byte 0 each time, then reported as the transport's failure: a
    # path attacker's bit flip is not the model's (the health gate does not count it)
    gets = [r for r in repo.requests if r.url.path == f"/v1/blobs/{sha(good)}"]
    assert len(gets) == 2 and not any("range" in r.headers for r in gets)
    assert repo.reports[-1]["kind"] == "transfer_failed" and repo.reports[-1]["reason"] == "hash_mismatch"
    assert device.store.failed() == {}  # a transport problem may pass: retried next time
    assert not device.store.partial_path(sha(good)).exists()


def test_tampered_manifest_reindexed_by_a_compromised_online_key(repo: Repo, device: Device) -> None:
    """The index key is online: whoever holds the server can re-sign an index, never a manifest."""
    doc = manifest_doc(repo.keys, "m", 2, {"cpu": ort_model(2.0)})
    doc["signed"]["model"]["threshold"] = -100.0  # nothing is ever an anomaly any more
    mbytes = repo.blobs[repo.add_blob(doc_bytes(doc))]
    repo.add_blob(ort_model(2.0))
    repo.set_index(index_doc(repo.keys, [entry("m", 2, mbytes)], version=2))
    reason, _ = _model_failure(device)
    assert reason == "bad_signature"


def test_manifest_signed_by_a_key_outside_the_publisher_role(repo: Repo, device: Device) -> None:
    attacker = [Ed25519PrivateKey.generate()]
    mbytes = doc_bytes(manifest_doc(repo.keys, "m", 2, {"cpu": ort_model(2.0)}, signers=attacker))
    repo.add_blob(mbytes)
    repo.add_blob(ort_model(2.0))
    repo.set_index(index_doc(repo.keys, [entry("m", 2, mbytes)], version=2))
    reason, _ = _model_failure(device)
    assert reason == "unknown_key"


@pytest.mark.parametrize("variant", ["other bytes at the path", "entry names another version"])
def test_mix_and_match(repo: Repo, device: Device, variant: str) -> None:
    v2 = repo.publish("m", 2, ort_model(2.0), index_version=2)
    v3 = doc_bytes(manifest_doc(repo.keys, "m", 3, {"cpu": ort_model(3.0)}))
    if variant == "other bytes at the path":
        repo.blobs[sha(v2)] = v3  # the blob store answers the entry's path with another manifest
        expected = "mix_and_match"
    else:  # a genuine v2 manifest under an entry that says v3
        repo.set_index(index_doc(repo.keys, [entry("m", 3, v2)], version=3))
        expected = "mix_and_match"
    reason, _ = _model_failure(device)
    assert reason == expected


def test_model_version_rollback(repo: Repo, device: Device) -> None:
    repo.publish("m", 2, ort_model(2.0), index_version=2)
    assert device.sync().installed
    v1 = doc_bytes(manifest_doc(repo.keys, "m", 1, {"cpu": ort_model(1.0)}))
    repo.add_blob(v1)
    repo.set_index(index_doc(repo.keys, [entry("m", 1, v1)], version=3))
    before = snapshot(device, index=False)
    repo.requests.clear()
    result = device.sync()
    assert result.status == "ok" and result.outcomes == []  # refused on the signed entry: check 2.6
    assert not any(r.url.path.startswith("/v1/blobs/") for r in repo.requests)
    assert device.store.installed_versions() == {"m": 2} and snapshot(device, index=False) == before
    # and should a manifest claim the rollback under a higher entry, check 3.4 / 3.5 refuse it
    repo.set_index(index_doc(repo.keys, [entry("m", 3, v1)], version=4))
    assert [o.reason for o in device.sync().outcomes] == ["mix_and_match"]
    assert device.store.installed_versions() == {"m": 2} and snapshot(device, index=False) == before


def test_endless_data(repo: Repo, device: Device) -> None:
    """An artifact longer than its manifest says, sent forever: the device stops at the cap."""
    repo.publish("m", 2, ort_model(2.0), index_version=2)
    honest = repo.handle
    sent = {"bytes": 0}

    async def forever() -> AsyncIterator[bytes]:
        yield ort_model(2.0)
        while True:
            sent["bytes"] += 4096
            yield b"\0" * 4096
            await asyncio.sleep(0)

    def attacker(request: httpx.Request) -> httpx.Response:
        if request.url.path == f"/v1/blobs/{sha(ort_model(2.0))}":
            return httpx.Response(200, stream=_Stream(forever()))
        return honest(request)

    repo.handle = attacker  # type: ignore[method-assign]
    reason, _ = _model_failure(device)
    assert reason == "length_mismatch"
    assert sent["bytes"] <= 2 * 65536  # it stopped reading at once
    assert not device.store.partial_path(sha(ort_model(2.0))).exists()


def test_endless_compressed_data(repo: Repo, device: Device) -> None:
    """Endless empty zstd frames decompress to nothing: the compressed bytes are capped too."""
    import zstandard

    repo.publish("m", 2, ort_model(2.0), index_version=2)
    honest = repo.handle
    empty = zstandard.ZstdCompressor().compress(b"")

    async def forever() -> AsyncIterator[bytes]:
        while True:
            yield empty * 500
            await asyncio.sleep(0)

    def attacker(request: httpx.Request) -> httpx.Response:
        if request.url.path == f"/v1/blobs/{sha(ort_model(2.0))}":
            return httpx.Response(200, stream=_Stream(forever()), headers={"Content-Encoding": "zstd"})
        return honest(request)

    repo.handle = attacker  # type: ignore[method-assign]
    reason, _ = _model_failure(device)
    assert reason == "length_mismatch"


def test_slow_retrieval(repo: Repo, device: Device) -> None:
    """Each byte arrives well within the read timeout; the whole never within the deadline."""
    repo.publish("m", 2, ort_model(2.0), index_version=2)
    honest = repo.handle

    async def trickle() -> AsyncIterator[bytes]:
        for b in ort_model(2.0):
            await asyncio.sleep(0.02)
            yield bytes([b])

    def attacker(request: httpx.Request) -> httpx.Response:
        if request.url.path == f"/v1/blobs/{sha(ort_model(2.0))}":
            return httpx.Response(200, stream=_Stream(trickle()))
        return honest(request)

    repo.handle = attacker  # type: ignore[method-assign]
    before = snapshot(device, index=False)
    start = time.monotonic()
    result = device.sync()
    assert time.monotonic() - start < 45.0  # the trickle alone would take over a minute
    assert result.error_code == "slow_retrieval" and result.status == "failed"
    assert device.store.installed_versions() == {"m": 1} and snapshot(device, index=False) == before


# ---------------------------------------------------------------- index


def test_index_signed_by_the_wrong_key(repo: Repo, device: Device) -> None:
    repo.set_index(index_doc(repo.keys, [], version=5, signers=repo.keys.publisher))
    assert _index_failure(device) == "unknown_key"


def test_index_below_threshold(tmp_path: Path) -> None:
    keys = Keys(index=[Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()],
                thresholds={"root": 1, "publisher": 1, "index": 2})
    repo = Repo(keys=keys)
    repo.publish("m", 1, ort_model(1.0), index_version=1)
    device = Device.register(tmp_path / "d", server="http://repo.test", enroll_token="mse_good",
                             platform="linux", root_envelope=json.loads(repo.roots[1]),
                             transport=repo.transport(), config=CONFIG)
    assert device.sync().installed
    mbytes = doc_bytes(manifest_doc(keys, "m", 2, {"cpu": ort_model(2.0)}))
    repo.set_index(index_doc(keys, [entry("m", 2, mbytes)], version=2, signers=keys.index[:1]))
    assert _index_failure(device) == "threshold"


def test_index_version_rollback(repo: Repo, device: Device) -> None:
    old = repo.index
    repo.publish("m", 2, ort_model(2.0), index_version=2)
    assert device.sync().installed
    repo.index = old  # a genuine, unexpired, older index replayed
    assert _index_failure(device) == "rollback"
    assert device.store.installed_versions() == {"m": 2}


def test_index_for_another_fleet(repo: Repo, device: Device) -> None:
    repo.set_index(index_doc(repo.keys, [], version=9, fleet="other"))
    assert _index_failure(device) == "wrong_channel"


def test_expired_index_freeze(repo: Repo, device: Device) -> None:
    repo.publish("m", 2, ort_model(2.0), index_version=2, lifetime=timedelta(seconds=-60))
    before = snapshot(device)
    result = device.sync()
    assert result.status == "stale" and result.error_code == "stale_index" and not result.outcomes
    assert snapshot(device) == before
    assert device.predict([[1.0, 1.0, 1.0]]).labels.tolist() == [1]  # never stops working
    assert [e["kind"] for e in repo.reports][-1] == "stale_index"


# ---------------------------------------------------------------- root rotation


def test_root_rotation_good_chain(repo: Repo, device: Device) -> None:
    """Root v2 replaces the index key (signed by v1's root keys and its own); v3 the root key."""
    keys = repo.keys
    rotated = Keys(root=keys.root, publisher=keys.publisher, index=[Ed25519PrivateKey.generate()])
    repo.roots[2] = doc_bytes(root_doc(rotated, 2))
    final = Keys(root=[Ed25519PrivateKey.generate()], publisher=keys.publisher, index=rotated.index)
    repo.roots[3] = doc_bytes(root_doc(final, 3, signers=keys.root + final.root))
    repo.keys = final
    repo.publish("m", 2, ort_model(2.0), index_version=2)
    result = device.sync()
    assert result.root_version == 3 and result.installed
    assert json.loads((device.store.root / "root.json").read_bytes())["signed"]["version"] == 3
    # the old index key no longer counts
    repo.set_index(index_doc(keys, [], version=7))
    assert _index_failure(device) == "unknown_key"


def test_root_rotation_bad_chain(repo: Repo, device: Device) -> None:
    attacker = Keys()
    repo.roots[2] = doc_bytes(root_doc(attacker, 2))
    repo.keys = attacker
    repo.publish("m", 2, ort_model(2.0), index_version=2)
    assert _index_failure(device) == "unknown_key"
    assert json.loads((device.store.root / "root.json").read_bytes())["signed"]["version"] == 1


def test_root_chain_skipping_a_version(repo: Repo, device: Device) -> None:
    repo.roots[2] = doc_bytes(root_doc(repo.keys, 3))
    assert _index_failure(device) == "root_chain"


def test_rotation_that_is_good_then_bad_keeps_the_good_step(repo: Repo, device: Device) -> None:
    repo.roots[2] = doc_bytes(root_doc(repo.keys, 2))
    repo.roots[3] = doc_bytes(root_doc(Keys(), 3))
    result = device.sync()
    assert result.error_code == "unknown_key"
    assert json.loads((device.store.root / "root.json").read_bytes())["signed"]["version"] == 2  # check 1.5
    assert device.store.installed_versions() == {"m": 1}


def test_expired_final_root(repo: Repo, device: Device) -> None:
    repo.roots[2] = doc_bytes(root_doc(repo.keys, 2, lifetime=timedelta(seconds=-1)))
    result = device.sync()
    assert result.error_code == "expired" and not result.outcomes
    assert device.store.installed_versions() == {"m": 1}


class _Stream(httpx.AsyncByteStream):
    def __init__(self, gen: AsyncIterator[bytes]) -> None:
        self.gen = gen

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.gen:
            yield chunk


def test_fast_forward_recovery_after_index_key_rotation(repo: Repo, device: Device) -> None:
    """A stolen index key signs index v1000; once root v2 replaces that key, the honest
    index (v3) must be accepted again rather than refused as a rollback (check 1.5)."""
    repo.set_index(index_doc(repo.keys, [], version=1000))
    assert device.sync().index_version == 1000
    rotated = Keys(root=repo.keys.root, publisher=repo.keys.publisher, index=[Ed25519PrivateKey.generate()])
    repo.roots[2] = doc_bytes(root_doc(rotated, 2))
    repo.keys = rotated
    repo.publish("m", 2, ort_model(2.0), index_version=3)
    result = device.sync()
    assert result.root_version == 2 and result.index_version == 3 and result.installed
