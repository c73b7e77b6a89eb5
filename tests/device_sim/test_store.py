"""device_sim.store: atomic state; a crash at any step leaves a whole model to serve."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from device_sim.store import TMP_MARK, Identity, Installed, Store, StoreError
from packager.errors import UsageError


class Crash(Exception):
    pass


def _identity() -> Identity:
    return Identity(device_id="d1", server="http://x", platform="linux", target="cpu", fleet="f1",
                    token="msd_secret", ort_version="1.24.4")


def _inst(version: int, artifact: bytes) -> Installed:
    return Installed(name="m", version=version, target="cpu", manifest_sha256="0" * 64,
                     artifact_sha256=hashlib.sha256(artifact).hexdigest(), artifact_length=len(artifact),
                     installed_at="2026-01-01T00:00:00Z")


def _art(version: int) -> bytes:
    return f"artifact-{version}-".encode() * 100


def _install(store: Store, version: int) -> Installed:
    inst = _inst(version, _art(version))
    store.install(inst, b'{"manifest": %d}' % version, _art(version))
    return inst


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.create(tmp_path / "state", _identity(), {"signed": {"version": 1}, "signatures": []})


def test_identity_and_root_round_trip(store: Store) -> None:
    reopened = Store.open(store.root)
    assert reopened.identity == _identity()
    assert reopened.root_envelope()["signed"]["version"] == 1
    assert (store.root / "device.json").stat().st_mode & 0o777 == 0o600  # it holds the device token


def test_open_unregistered_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a registered device"):
        Store.open(tmp_path)


def test_malformed_pointer_is_a_store_error(store: Store) -> None:
    _install(store, 1)
    (store.root / "models" / "m" / "current.json").write_text("{not json")
    with pytest.raises(StoreError, match=r"current\.json"):
        store.slot("m")


def test_install_keeps_previous_and_cleans_older(store: Store) -> None:
    for v in (1, 2, 3):
        _install(store, v)
    slot = store.slot("m")
    assert slot is not None and slot.current.version == 3 and slot.previous is not None
    assert slot.previous.version == 2
    assert sorted(p.name for p in (store.root / "models" / "m").glob("v*")) == ["v2", "v3"]
    assert store.installed_versions() == {"m": 3}
    assert store.usage_bytes() >= 2 * len(_art(3))


def test_corrupt_current_falls_back_to_previous(store: Store) -> None:
    _install(store, 1)
    cur = _install(store, 2)
    store.artifact_path(cur).write_bytes(b"rot")
    usable = store.usable("m")
    assert usable is not None and usable.version == 1


def _hook_steps(tmp_path: Path) -> list[str]:
    seen: list[str] = []
    s = Store.create(tmp_path / "probe", _identity(), {"signed": {}, "signatures": []})
    _install(s, 1)
    s.hook = seen.append
    _install(s, 2)
    return seen


def test_crash_at_every_step_leaves_a_whole_model(tmp_path: Path) -> None:
    steps = _hook_steps(tmp_path)
    assert "install:pointer" in steps and "write:current.json" in steps and len(steps) >= 6
    for i, step in enumerate(steps):
        d = tmp_path / f"s{i}"
        s = Store.create(d, _identity(), {"signed": {}, "signatures": []})
        _install(s, 1)

        def crash(name: str, at: str = step) -> None:
            if name == at:
                raise Crash(at)

        s.hook = crash
        with pytest.raises(Crash):
            _install(s, 2)
        reopened = Store.open(d)
        usable = reopened.usable("m")
        assert usable is not None, step
        # the pointer moves to v2 only once it is written and renamed: before that, v1
        assert usable.version == (2 if steps.index(step) >= steps.index("install:pointer") else 1), step
        assert reopened.artifact_path(usable).read_bytes() == _art(usable.version)
        assert not list(d.rglob(f"*{TMP_MARK}*")), step
        assert {p.name for p in (d / "models" / "m").glob("v*")} <= {"v1", "v2"}
        _install(reopened, 2)  # and the device can carry on from there
        assert reopened.usable("m") == _inst(2, _art(2))


CHILD = textwrap.dedent("""
    import hashlib, sys
    from pathlib import Path
    from device_sim.store import Installed, Store
    store = Store.open(Path(sys.argv[1]))
    v = store.installed_versions().get("m", 0)
    while True:
        v += 1
        art = (b"%d" % v) * 400_000
        inst = Installed(name="m", version=v, target="cpu", manifest_sha256="0" * 64,
                         artifact_sha256=hashlib.sha256(art).hexdigest(), artifact_length=len(art),
                         installed_at="2026-01-01T00:00:00Z")
        store.install(inst, b"{}", art)
        store.enqueue("installed", model="m", version=v)
        print(v, flush=True)
""")


def test_sigkill_at_random_instants(store: Store) -> None:
    """A real crash: a child installs version after version and is killed at random moments."""
    _install(store, 1)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    for delay in (0.0, 0.07, 0.13, 0.29):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(store.root)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert child.stdout is not None
        child.stdout.readline()  # it is installing: start the clock once one version went in
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.communicate()  # reaps it and closes the pipes
        reopened = Store.open(store.root)
        usable = reopened.usable("m")
        assert usable is not None
        assert usable == reopened.slot("m").current  # type: ignore[union-attr]
        art = reopened.artifact_path(usable).read_bytes()
        assert usable.version > 1 and art == (b"%d" % usable.version) * 400_000
        for _path, event in reopened.queued():
            assert event["kind"] == "installed"
    assert reopened.installed_versions()["m"] >= 1


def test_report_queue_is_ordered_and_drops_unreadable(store: Store) -> None:
    for v in range(3):
        store.enqueue("installed", model="m", version=v)
    (store.root / "queue" / "00000000000000000000-broken.json").write_text("{")
    batch = list(store.queued())
    assert [e["version"] for _, e in batch] == [0, 1, 2]
    assert all(set(e) == {"event_id", "kind", "at", "model", "version"} for _, e in batch)
    store.dequeue([p for p, _ in batch[:2]])
    assert [e["version"] for _, e in store.queued()] == [2]


def test_failed_versions_and_stale_marks(store: Store) -> None:
    store.mark_failed("m", 3)
    store.mark_failed("m", 4)
    assert Store.open(store.root).failed() == {"m": {3, 4}}
    assert store.stale_reported("stable") is None
    store.mark_stale_reported("stable", 9)
    assert store.stale_reported("stable") == 9


def test_index_round_trip(store: Store) -> None:
    assert store.saved_index("stable") is None
    store.save_index("stable", {"signed": {"version": 2}}, '"abc"')
    assert store.saved_index("stable") == ({"signed": {"version": 2}}, '"abc"')
