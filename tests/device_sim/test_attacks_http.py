"""The attacks of test_attacks.py over real HTTP (issue 8): a REAL device (device_sim) talks
to a REAL ``modelsync serve`` through a man in the middle of our own
(tests/attack_proxy.py), which forwards honestly until a test gives it a rule and then
forges or replays what the service said. Each test asserts the refusal, that the device's
trusted state (root, saved index, installed models: test_attacks.snapshot) is
byte-identical, and that the device recovers once the proxy turns honest.

The attacker holds what anyone on the path holds — genuine documents it saw pass, bytes of
its own, keys it made — never the service's keys. Real bundles (tests/conftest.py's
make_bundle: an IsolationForest in ORT format), real SQLite, real onnxruntime.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import Session

from device_sim.device import Device
from device_sim.service_process import running_service
from device_sim.transfer import SyncConfig
from packager.keys import load_private_key
from packager.manifest import sign
from sync_service import crud
from sync_service.core.config import Settings
from sync_service.main import create_app
from tests.attack_proxy import AttackProxy, Reply, Request
from tests.device_sim.forge import Keys, doc_bytes, root_doc
from tests.device_sim.test_attacks import snapshot

pytestmark = pytest.mark.slow

MODEL = "fleet-iforest"
INDEX = "/v1/channels/stable/index"
HONEST = SyncConfig(connect_timeout=10, read_timeout=30, deadline=120)
MIB = 1024 * 1024


@dataclass
class Service:
    proxy: AttackProxy
    publisher: str
    keys_dir: Path
    manifests: dict[int, str]  # version → manifest sha256
    fleets: Iterator[int]

    def call(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        """The release engineer, straight to the service (not through the proxy)."""
        auth = {"Authorization": f"Bearer {self.publisher}", **(headers or {})}
        with httpx.Client(base_url=self.proxy.upstream_url, timeout=60) as http:
            return http.request(method, path, headers=auth, **kw)


def _start(tmp_path: Path, keys_dir: Path, bundles: list[Path], env: dict[str, str]) -> Iterator[Service]:
    data = tmp_path / "data"
    settings = Settings(
        data_dir=data, root_path=keys_dir / "root.json", index_key_path=keys_dir / "index.key"
    )
    app = create_app(settings)  # migrates the embedded SQLite, then hands it to `serve`
    with Session(app.state.engine) as session:
        publisher, _ = crud.create_token(
            session=session, kind="publisher", scopes=("publish", "release", "admin"), name="attacks"
        )
        session.commit()
    app.state.engine.dispose()
    with (
        running_service(data, keys_dir / "root.json", keys_dir / "index.key", env=env) as svc,
        AttackProxy(svc.url) as proxy,
    ):
        service = Service(proxy, publisher, keys_dir, {}, itertools.count(1))
        for bundle in bundles:
            body = _tar(bundle)
            r = service.call(
                "POST", "/v1/bundles", content=body, headers={"Content-Type": "application/x-tar"}
            )
            assert r.status_code in (200, 201), r.text
            service.manifests[r.json()["version"]] = r.json()["manifest_sha256"]
        yield service


def _tar(bundle: Path) -> bytes:
    from tests.sync_service.bundle_factory import tar_dir

    return tar_dir(bundle)


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, keys_dir: Path, make_bundle: Callable[..., Path]
) -> Iterator[Service]:
    bundles = [make_bundle(v) for v in (1, 2, 3)]
    yield from _start(tmp_path_factory.mktemp("attacks-http"), keys_dir, bundles, {})


@dataclass
class Victim:
    device: Device
    fleet: str
    service: Service

    def release(self, version: int) -> None:
        r = self.service.call(
            "POST",
            "/v1/releases",
            json={
                "fleet": self.fleet,
                "channel": "stable",
                "model": MODEL,
                "version": version,
                "percent": 100,
            },
        )
        assert r.status_code == 201, r.text

    def refused(self, installed: int, index: bool = True) -> Any:
        """One sync under attack: nothing installed, trusted state byte-identical (the saved
        index left out where the attack is on a model's bytes: the genuine index that names
        the new version is rightly saved)."""
        before = snapshot(self.device, index)
        result = self.device.sync()
        assert not result.installed, result
        assert self.device.store.installed_versions() == {MODEL: installed}
        assert snapshot(self.device, index) == before
        return result

    def recovers(self, version: int) -> None:
        self.service.proxy.rule = None
        self.device.config = HONEST
        result = self.device.sync()
        assert result.status in ("ok", "not_modified"), result
        assert self.device.store.installed_versions() == {MODEL: version}, result


def _victim(service: Service, tmp_path: Path) -> Victim:
    """A fleet of its own with v1 released, and a device in it that installed v1 through
    the (still honest) proxy."""
    fleet = f"fleet-{next(service.fleets)}"
    assert service.call("POST", "/v1/admin/fleets", json={"name": fleet}).status_code == 201
    r = service.call("POST", "/v1/admin/tokens", json={"kind": "enrollment", "fleet": fleet})
    assert r.status_code == 201, r.text
    victim = Victim(
        Device.register(
            tmp_path / "device",
            server=service.proxy.url,
            enroll_token=r.json()["token"],
            platform="linux",
            root_envelope=json.loads((service.keys_dir / "root.json").read_bytes()),
            config=HONEST,
        ),
        fleet,
        service,
    )
    victim.release(1)
    result = victim.device.sync()
    assert [o.version for o in result.installed] == [1], result
    return victim


@pytest.fixture
def victim(service: Service, tmp_path: Path) -> Iterator[Victim]:
    service.proxy.rule = None
    yield _victim(service, tmp_path)
    service.proxy.rule = None


def _artifact_requests(
    service: Service, version: int, reply: Callable[[], Reply]
) -> Callable[[Request], Reply | None]:
    """A rule answering every request for the model's bytes (not its manifest) with
    ``reply()``; deltas are refused (404) so the device asks for the blob itself."""
    manifest = service.manifests[version]

    def rule(request: Request) -> Reply | None:
        if not request.path.startswith("/v1/blobs/") or request.path.startswith(f"/v1/blobs/{manifest}"):
            return None
        if "/delta" in request.path:
            body = json.dumps({"detail": "no delta", "code": "delta_not_useful"}).encode()
            return Reply(404, {"Content-Type": "application/json"}, body)
        return reply()

    return rule


def _index_is(body: bytes) -> Callable[[Request], Reply | None]:
    """A rule answering the index check with ``body``."""
    return lambda r: Reply(200, {"Content-Type": "application/json"}, body) if r.path == INDEX else None


# ---------------------------------------------------------------- index


def test_rollback_to_an_older_signed_index(victim: Victim) -> None:
    proxy = victim.service.proxy
    old = proxy.last_honest(INDEX)  # genuine, signed, unexpired: what v1 came with
    victim.release(2)
    assert [o.version for o in victim.device.sync().installed] == [2]
    proxy.rule = _index_is(old)
    result = victim.refused(installed=2)
    assert result.status == "failed" and result.error_code == "rollback"
    victim.recovers(2)


def test_index_signed_by_a_key_the_root_does_not_trust(victim: Victim) -> None:
    proxy = victim.service.proxy
    genuine = json.loads(proxy.last_honest(INDEX))
    forged_signed = {**genuine["signed"], "version": genuine["signed"]["version"] + 1, "models": {}}
    forged = doc_bytes(sign(forged_signed, [Ed25519PrivateKey.generate()]))
    proxy.rule = _index_is(forged)
    victim.release(2)
    result = victim.refused(installed=1)
    assert result.status == "failed" and result.error_code == "unknown_key"
    victim.recovers(2)


def test_freeze_replaying_a_genuine_index_after_it_expired(
    tmp_path: Path, keys_dir: Path, make_bundle: Callable[..., Path]
) -> None:
    """A service of its own whose indexes live 3 s: the genuine index the device holds is
    replayed until its real expiry has passed; the device refuses it as stale."""
    bundles = [make_bundle(1), make_bundle(2)]
    started = _start(tmp_path, keys_dir, bundles, {"MODELSYNC_INDEX_LIFETIME": "PT3S"})
    service = next(started)
    try:
        victim = _victim(service, tmp_path)
        frozen = service.proxy.last_honest(INDEX)
        expires = datetime.fromisoformat(json.loads(frozen)["signed"]["expires"].replace("Z", "+00:00"))
        service.proxy.rule = _index_is(frozen)
        victim.release(2)  # what the freeze hides
        while datetime.now(expires.tzinfo) <= expires:  # the real clock: no injected time
            time.sleep(0.2)
        result = victim.refused(installed=1)
        assert result.status == "stale" and result.error_code == "stale_index", result
        victim.recovers(2)  # the service re-signs: a newer, fresh index
    finally:
        started.close()


# ---------------------------------------------------------------- manifests and artifacts


def test_mix_and_match_another_versions_manifest(victim: Victim) -> None:
    """v3's genuine, publisher-signed manifest served where the index names v2's."""
    service = victim.service
    v2, v3 = service.manifests[2], service.manifests[3]
    other = service.proxy.fetch(f"/v1/blobs/{v3}", service.publisher)
    service.proxy.rule = lambda r: Reply(200, {}, other) if r.path.startswith(f"/v1/blobs/{v2}") else None
    victim.release(2)
    result = victim.refused(installed=1, index=False)
    assert [o.reason for o in result.outcomes] == ["mix_and_match"], result
    victim.recovers(2)


def test_endless_data(victim: Victim) -> None:
    """The artifact answered with a body longer than the manifest's length, sent for ever
    (no Content-Length): the device stops reading at the length and hangs up."""
    proxy = victim.service.proxy
    proxy.rule = _artifact_requests(victim.service, 2, lambda: Reply(body=itertools.repeat(bytes(64 * 1024))))
    victim.release(2)
    result = victim.refused(installed=1, index=False)
    assert [o.reason for o in result.outcomes] == ["length_mismatch"], result
    # What the device did not read sits in socket buffers; the rest was never sent.
    assert proxy.sent_by_rule < 64 * MIB, proxy.sent_by_rule
    print(f"endless data: {proxy.sent_by_rule / MIB:.1f} MiB written before the device hung up")
    victim.recovers(2)


def test_slow_retrieval(victim: Victim) -> None:
    """One byte every 50 ms: each read well within the read timeout, the whole never within
    the sync's deadline."""
    victim.service.proxy.rule = _artifact_requests(
        victim.service, 2, lambda: Reply(body=itertools.repeat(b"\0"), delay=0.05)
    )
    victim.device.config = SyncConfig(connect_timeout=10, read_timeout=5, deadline=3)
    victim.release(2)
    start = time.monotonic()
    result = victim.refused(installed=1, index=False)
    assert time.monotonic() - start < 60
    assert result.status == "failed" and result.error_code == "slow_retrieval", result
    victim.recovers(2)


def test_zstd_bomb(victim: Victim) -> None:
    """8 KiB of zstd that would inflate to 256 MiB of zeros, as the artifact's body."""
    out = zstandard.ZstdCompressor(level=19).compressobj()
    bomb = b"".join(out.compress(bytes(MIB)) for _ in range(256)) + out.flush()
    assert len(bomb) < 16 * 1024
    victim.service.proxy.rule = _artifact_requests(
        victim.service, 2, lambda: Reply(headers={"Content-Encoding": "zstd"}, body=bomb)
    )
    victim.release(2)
    result = victim.refused(installed=1, index=False)
    assert [o.reason for o in result.outcomes] == ["length_mismatch"], result
    victim.recovers(2)


# ---------------------------------------------------------------- root rotation


def test_forged_root_rotation(victim: Victim) -> None:
    """Root v2 naming the attacker's keys, signed by the attacker's root key."""
    forged = doc_bytes(root_doc(Keys(), 2))
    victim.service.proxy.rule = lambda r: Reply(200, {}, forged) if r.path == "/v1/root/2.json" else None
    victim.release(2)
    result = victim.refused(installed=1)
    assert result.status == "failed" and result.error_code == "unknown_key", result
    assert json.loads((victim.device.store.root / "root.json").read_bytes())["signed"]["version"] == 1
    victim.recovers(2)


def test_genuine_root_rotation_is_followed(victim: Victim) -> None:
    """Root v2 signed by the real root key (relayed by the proxy, as a mirror would): taken,
    and syncs go on under it once the proxy stops relaying it."""
    keys_dir = victim.service.keys_dir
    real = Keys(
        root=[load_private_key(keys_dir / "root.key")],
        publisher=[load_private_key(keys_dir / "publisher.key")],
        index=[load_private_key(keys_dir / "index.key")],
    )
    genuine = doc_bytes(root_doc(real, 2))
    victim.service.proxy.rule = lambda r: Reply(200, {}, genuine) if r.path == "/v1/root/2.json" else None
    victim.release(2)
    result = victim.device.sync()
    assert result.root_version == 2 and [o.version for o in result.installed] == [2], result
    assert json.loads((victim.device.store.root / "root.json").read_bytes())["signed"]["version"] == 2
    victim.recovers(2)
