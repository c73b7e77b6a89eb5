"""Limits a device holds to on its own: the manifest size cap (MAX_MANIFEST_BYTES, check
3.1) and, with the device's clock in the test's hands, the expiry of a genuine index that
a server (or a freeze attacker) keeps replaying after it really expired (check 2.5)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from device_sim.device import Device
from device_sim.transfer import SyncConfig
from packager.manifest import MAX_MANIFEST_BYTES, parse_time, sign
from tests.device_sim.forge import doc_bytes, entry, index_doc, manifest_doc, ort_model
from tests.device_sim.repo import Repo

FAST = SyncConfig(connect_timeout=1, read_timeout=1, deadline=10)


class Clock:
    """The device's "now", set by the test (Device(now=...) is what trust checks read)."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.at


def _device(repo: Repo, state: Path, clock: Clock | None = None) -> Device:
    Device.register(state, server="http://repo.test", enroll_token="mse_good", platform="linux",
                    root_envelope=json.loads(repo.roots[1]), device_id="dev-1",
                    transport=repo.transport(), config=FAST)
    if clock is None:
        return Device(state, transport=repo.transport(), config=FAST)
    return Device(state, transport=repo.transport(), config=FAST, now=clock)


def _snapshot(device: Device) -> dict[str, str]:
    root = device.store.root
    files = [root / "root.json", *sorted((root / "models").rglob("*")),
             *sorted(p for p in (root / "index").glob("*.json") if not p.name.endswith(".stale.json"))]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files if p.is_file()}


def test_a_genuine_index_replayed_after_its_expiry_is_refused_as_stale(tmp_path: Path) -> None:
    repo = Repo(deltas=False)
    repo.publish("m", 1, ort_model(1.0), index_version=1, lifetime=timedelta(hours=6))
    expires = parse_time(json.loads(repo.index or b"{}")["signed"]["expires"])
    clock = Clock()
    device = _device(repo, tmp_path / "d", clock)
    assert device.sync().installed
    # the server never signs again: every poll gets the same genuine index (a 304 on its ETag)
    clock.at = expires - timedelta(minutes=1)
    assert device.sync().status == "not_modified"
    before = _snapshot(device)
    clock.at = expires + timedelta(seconds=1)
    stale = device.sync()
    assert (stale.status, stale.error_code, stale.index_version) == ("stale", "stale_index", 1)
    assert device.store.installed_versions() == {"m": 1} and _snapshot(device) == before
    assert [e["kind"] for e in repo.reports].count("stale_index") == 1
    clock.at = expires + timedelta(days=30)  # still refused, and reported once per version
    assert device.sync().status == "stale"
    assert [e["kind"] for e in repo.reports].count("stale_index") == 1
    # a freshly signed index ends the freeze
    repo.publish("m", 2, ort_model(2.0), index_version=2, lifetime=timedelta(days=60))
    assert [o.version for o in device.sync().installed] == [2]


def test_a_manifest_over_the_cap_is_refused_before_it_is_fetched(tmp_path: Path) -> None:
    repo = Repo(deltas=False)
    doc = manifest_doc(repo.keys, "m", 1, {"cpu": ort_model(1.0)})
    # genuine, signed, and named by the index with its true length: only the cap refuses it
    big = sign({**doc["signed"], "padding": "x" * MAX_MANIFEST_BYTES}, repo.keys.publisher)
    mbytes = doc_bytes(big)
    repo.add_blob(mbytes)
    repo.add_blob(ort_model(1.0))
    repo.set_index(index_doc(repo.keys, [entry("m", 1, mbytes)], version=1, fleet=repo.fleet))
    device = _device(repo, tmp_path / "d")
    result = device.sync()
    assert [(o.outcome, o.reason) for o in result.outcomes] == [("failed", "format")]
    assert f"more than the {MAX_MANIFEST_BYTES}" in result.outcomes[0].detail
    assert not any(r.url.path.startswith("/v1/blobs/") for r in repo.requests)
    assert device.store.installed_versions() == {}
