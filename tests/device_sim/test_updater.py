"""device_sim.updater against a repository transport: the honest paths, download modes,
conditions, golden vectors, offline reports, polling."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path

import bsdiff4
import httpx
import pytest

from device_sim.delta import apply_delta
from device_sim.device import Device
from device_sim.transfer import SyncConfig
from device_sim.updater import next_delay
from tests.device_sim.forge import ort_model, sha
from tests.device_sim.repo import Repo

FAST = SyncConfig(connect_timeout=1, read_timeout=1, deadline=10)


@pytest.fixture
def repo() -> Repo:
    return Repo()


def enroll(repo: Repo, state: Path, platform: str = "linux", **kw: object) -> Device:
    return Device.register(state, server="http://repo.test", enroll_token="mse_good", platform=platform,
                           root_envelope=json.loads(repo.roots[1]), device_id="dev-1",
                           transport=repo.transport(), config=FAST, **kw)


def paths(repo: Repo) -> list[str]:
    return [f"{r.method} {r.url.path}" for r in repo.requests]


def test_register_sync_install_and_predict(repo: Repo, tmp_path: Path) -> None:
    repo.publish("m", 1, ort_model(1.0), index_version=1)
    device = enroll(repo, tmp_path / "d")
    result = device.sync()
    assert result.status == "ok" and [o.outcome for o in result.outcomes] == ["installed"]
    assert result.outcomes[0].transfer == "zstd"
    assert device.store.installed_versions() == {"m": 1}
    pred = device.predict([[1.0, 1.0, 1.0], [-5.0, 0.0, 0.0]])
    assert list(pred.labels) == [1, -1]
    assert [e["kind"] for e in repo.reports] == ["installed"]
    # nothing new: the index answers 304 and nothing is downloaded again
    repo.requests.clear()
    again = device.sync()
    assert again.status == "not_modified" and again.outcomes == []
    assert not any("/blobs/" in p for p in paths(repo))
    assert [e["kind"] for e in repo.reports] == ["installed", "behaviour"]
    data = repo.reports[1]["data"]
    assert (data["rows"], data["anomalies"], data["calls"]) == (2, 1, 1)
    assert data["provider"] == "CPUExecutionProvider" and data["histogram"] == []  # no profile in it
    assert 0 <= data["latency_ms"]["p50"] <= data["latency_ms"]["p95"]


def test_bad_enrollment_token_writes_nothing(repo: Repo, tmp_path: Path) -> None:
    from device_sim.transfer import DownloadError

    with pytest.raises(DownloadError, match="401"):
        Device.register(tmp_path / "d", server="http://repo.test", enroll_token="mse_bad", platform="linux",
                        root_envelope=json.loads(repo.roots[1]), transport=repo.transport())
    assert not (tmp_path / "d").exists()


def test_delta_between_versions_and_previous_kept(repo: Repo, tmp_path: Path) -> None:
    repo.publish("m", 1, ort_model(1.0), index_version=1)
    device = enroll(repo, tmp_path / "d")
    device.sync()
    repo.publish("m", 2, ort_model(2.0), index_version=2)
    result = device.sync()
    assert result.outcomes[0].outcome == "installed" and result.outcomes[0].transfer == "delta"
    slot = device.store.slot("m")
    assert slot is not None and slot.current.version == 2 and slot.previous is not None
    assert slot.previous.version == 1
    assert device.store.artifact_path(slot.current).read_bytes() == ort_model(2.0)


def test_predict_falls_back_to_the_previous_version_when_the_current_rots(
    repo: Repo, tmp_path: Path
) -> None:
    from device_sim.errors import NoModelError

    repo.publish("m", 1, ort_model(1.0), index_version=1)
    device = enroll(repo, tmp_path / "d")
    device.sync()
    repo.publish("m", 2, ort_model(2.0), index_version=2)
    device.sync()
    slot = device.store.slot("m")
    assert slot is not None and slot.previous is not None
    device.store.artifact_path(slot.current).write_bytes(b"rot")
    assert list(device.predict([[1.0, 1.0, 1.0]]).labels) == [1]
    assert [(name, version) for name, version in device._stats] == [("m", 1)]  # v1 served
    device.store.artifact_path(slot.previous).write_bytes(b"rot")
    device._engines.clear()
    with pytest.raises(NoModelError, match=r"no usable version of 'm': v2 files missing or altered; "
                                           r"v1 files missing or altered"):
        device.predict([[1.0, 1.0, 1.0]])


def test_corrupt_delta_falls_back_to_full_download(repo: Repo, tmp_path: Path) -> None:
    repo.publish("m", 1, ort_model(1.0), index_version=1)
    device = enroll(repo, tmp_path / "d")
    device.sync()
    repo.publish("m", 2, ort_model(2.0), index_version=2)

    def broken(digest: str, base: str) -> httpx.Response:
        patch = bsdiff4.diff(repo.blobs[base], repo.blobs[digest])
        return httpx.Response(200, content=patch[:-7] + b"garbage", headers={"X-Delta-From": base})

    repo._delta = broken  # type: ignore[method-assign]
    result = device.sync()
    assert result.outcomes[0].outcome == "installed" and result.outcomes[0].transfer == "zstd"


def test_apply_delta_refuses_a_wrong_declared_length() -> None:
    from device_sim.trust import LengthMismatchError

    old, new = ort_model(1.0), ort_model(3.0)
    patch = bsdiff4.diff(old, new)
    assert apply_delta(old, patch, len(new)) == new
    with pytest.raises(LengthMismatchError):
        apply_delta(old, patch, len(new) - 1)
    with pytest.raises(ValueError, match="BSDIFF4"):
        apply_delta(old, b"nope" * 10, len(new))


def test_range_resume_of_a_partial_download(repo: Repo, tmp_path: Path) -> None:
    model = ort_model(1.5)
    repo.publish("m", 1, model, index_version=1)
    device = enroll(repo, tmp_path / "d")
    device.store.partial_path(sha(model)).write_bytes(model[:1000])
    result = device.sync()
    assert result.outcomes[0].outcome == "installed" and result.outcomes[0].transfer == "resumed"
    ranged = [r for r in repo.requests if r.headers.get("range")]
    assert ranged[0].headers["range"] == "bytes=1000-"
    assert not device.store.partial_path(sha(model)).exists()


def test_server_ignoring_range_restarts_cleanly(repo: Repo, tmp_path: Path) -> None:
    model = ort_model(1.5)
    repo.publish("m", 1, model, index_version=1)
    repo.honour_range = False
    repo.zstd = False
    device = enroll(repo, tmp_path / "d")
    device.store.partial_path(sha(model)).write_bytes(b"x" * 1000)  # even a wrong partial
    assert device.sync().outcomes[0].outcome == "installed"


def test_outside_rollout_bucket_downloads_nothing(repo: Repo, tmp_path: Path) -> None:
    repo.publish("m", 1, ort_model(), index_version=1, percent=0.0)
    device = enroll(repo, tmp_path / "d")
    result = device.sync()
    assert result.status == "ok" and result.outcomes == []
    assert not any("/blobs/" in p for p in paths(repo))


def test_metered_link_defers_unless_urgent(repo: Repo, tmp_path: Path) -> None:
    repo.publish("m", 1, ort_model(), index_version=1)
    device = enroll(repo, tmp_path / "d")
    ident = device.store.identity
    device.store.save_identity(ident.model_copy(update={"metered": True, "metered_max_bytes": 100}))
    device = Device(device.store.root, transport=repo.transport(), config=FAST)
    result = device.sync()
    assert [(o.outcome, o.reason) for o in result.outcomes] == [("deferred", "metered")]
    assert device.store.installed_versions() == {}
    repo.publish("m", 1, ort_model(), index_version=2, urgent=True)
    assert device.sync().outcomes[0].outcome == "installed"


def test_storage_budget_defers(repo: Repo, tmp_path: Path) -> None:
    repo.publish("m", 1, ort_model(), index_version=1)
    device = enroll(repo, tmp_path / "d")
    device.store.save_identity(device.store.identity.model_copy(update={"storage_budget_bytes": 1000}))
    device = Device(device.store.root, transport=repo.transport(), config=FAST)
    assert [(o.outcome, o.reason) for o in device.sync().outcomes] == [("deferred", "storage_budget")]


def test_golden_failure_keeps_previous_reports_and_never_retries(repo: Repo, tmp_path: Path) -> None:
    repo.publish("m", 1, ort_model(1.0), index_version=1)
    device = enroll(repo, tmp_path / "d")
    device.sync()
    # v2's golden vectors were recorded from another model: the artifact misses them
    repo.publish("m", 2, ort_model(2.0), index_version=2, manifest_kw={"golden_from": ort_model(1.0)})
    result = device.sync()
    assert [(o.outcome, o.reason) for o in result.outcomes] == [("failed", "golden_vector")]
    assert device.store.installed_versions() == {"m": 1}
    assert repo.reports[-1]["kind"] == "golden_failed" and repo.reports[-1]["version"] == 2
    assert device.store.failed() == {"m": {2}}
    repo.requests.clear()
    repo.publish("m", 2, ort_model(2.0), index_version=3, manifest_kw={"golden_from": ort_model(1.0)})
    assert device.sync().outcomes == []
    assert not any("/blobs/" in p for p in paths(repo))


def test_unloadable_artifact_is_install_failed_and_not_retried(repo: Repo, tmp_path: Path) -> None:
    repo.publish("m", 1, b"not an onnx model at all", index_version=1,
                 manifest_kw={"golden_from": ort_model()})
    device = enroll(repo, tmp_path / "d")
    assert [(o.outcome, o.reason) for o in device.sync().outcomes] == [("failed", "artifact_load")]
    assert repo.reports[-1]["kind"] == "install_failed" and device.store.failed() == {"m": {1}}
    assert device.store.installed_versions() == {}


def test_newer_runtime_artifact_is_refused_and_not_retried(repo: Repo, tmp_path: Path) -> None:
    repo.publish("m", 1, ort_model(), index_version=1, manifest_kw={"ort_version": "1.99.0"})
    device = enroll(repo, tmp_path / "d")
    result = device.sync()
    assert [(o.outcome, o.reason) for o in result.outcomes] == [("failed", "runtime_too_old")]
    assert repo.reports[-1]["kind"] == "install_failed" and repo.reports[-1]["reason"] == "runtime_too_old"
    assert device.store.failed() == {"m": {1}}


def test_no_artifact_for_the_platform(repo: Repo, tmp_path: Path) -> None:
    repo.publish("m", 1, ort_model(), index_version=1, targets=("cpu",))
    device = enroll(repo, tmp_path / "d", platform="ios")
    assert device.sync().outcomes[0].reason == "no_artifact_for_target"


def test_offline_keeps_serving_and_reports_go_out_once(repo: Repo, tmp_path: Path) -> None:
    repo.publish("m", 1, ort_model(), index_version=1)
    device = enroll(repo, tmp_path / "d")
    repo.reports_status = 503
    assert device.sync().outcomes[0].outcome == "installed"
    assert repo.reports == [] and device.status().queued_reports == 1
    repo.down = True
    device.predict([[1.0, 2.0, 3.0]])
    offline = device.sync()
    assert offline.status == "offline" and offline.error_code == "download"
    assert device.predict([[1.0, 2.0, 3.0]]).labels.tolist() == [1]
    repo.down = False
    repo.reports_status = 200
    back = device.sync()
    assert back.reports_sent == 3
    assert [e["kind"] for e in repo.reports] == ["installed", "behaviour", "behaviour"]
    assert len({e["event_id"] for e in repo.reports}) == 3
    assert device.sync().reports_sent == 0


def test_expired_index_reports_stale_once_and_keeps_model(repo: Repo, tmp_path: Path) -> None:
    repo.publish("m", 1, ort_model(), index_version=1)
    device = enroll(repo, tmp_path / "d")
    device.sync()
    repo.publish("m", 2, ort_model(2.0), index_version=2, lifetime=timedelta(seconds=-1))
    for _ in range(2):
        result = device.sync()
        assert result.status == "stale" and result.error_code == "stale_index"
    assert device.store.installed_versions() == {"m": 1}
    assert [e["kind"] for e in repo.reports].count("stale_index") == 1
    assert device.status().index_version == 1


def test_status_lists_models(repo: Repo, tmp_path: Path) -> None:
    repo.publish("m", 1, ort_model(), index_version=1)
    device = enroll(repo, tmp_path / "d")
    device.sync()
    status = device.status()
    assert (status.device_id, status.fleet, status.target, status.index_version) == ("dev-1", "f1", "cpu", 1)
    assert [(m.name, m.current, m.previous, m.serving) for m in status.models] == [("m", 1, None, 1)]


def test_next_delay_jitters_and_backs_off() -> None:
    rng = random.Random(3)
    ok = [next_delay(60, 0, rng) for _ in range(200)]
    assert min(ok) >= 48 and max(ok) <= 72 and len(set(ok)) > 100
    backoff = [next_delay(60, n, random.Random(0), max_backoff=3600) for n in range(1, 12)]
    assert backoff[0] <= 120 and backoff[3] >= 60 * 16 * 0.5
    assert max(backoff) <= 3600


async def test_run_loop_polls_in_one_event_loop(repo: Repo, tmp_path: Path) -> None:
    repo.publish("m", 1, ort_model(), index_version=1)
    device = await Device.async_register(
        tmp_path / "d", server="http://repo.test", enroll_token="mse_good", platform="android",
        root_envelope=json.loads(repo.roots[1]), transport=repo.transport(), config=FAST)
    seen: list[str] = []
    await device.async_run(interval=0.001, iterations=3, on_result=lambda r: seen.append(r.status))
    assert seen == ["ok", "not_modified", "not_modified"]


def test_download_progress_is_reported(repo: Repo, tmp_path: Path) -> None:
    repo.publish("m", 1, ort_model(), index_version=1)
    enroll(repo, tmp_path / "d")
    seen: list[tuple[str, int, int]] = []
    device = Device(tmp_path / "d", transport=repo.transport(), config=FAST,
                    progress=lambda what, done, total: seen.append((what, done, total)))
    assert device.sync().installed
    assert seen and seen[-1] == (f"artifact {sha(ort_model())[:12]}", len(ort_model()), len(ort_model()))


def test_predict_falls_back_to_previous_when_current_is_damaged(repo: Repo, tmp_path: Path) -> None:
    from device_sim.errors import NoModelError

    device = enroll(repo, tmp_path / "d")
    with pytest.raises(NoModelError, match="no model installed yet"):
        device.predict([[1.0, 1.0, 1.0]])
    repo.publish("m", 1, ort_model(1.0), index_version=1)
    device.sync()
    repo.publish("m", 2, ort_model(-1.0), index_version=2)  # v2 flips every label
    device.sync()
    assert device.predict([[1.0, 1.0, 1.0]]).labels.tolist() == [-1]
    slot = device.store.slot("m")
    assert slot is not None
    device.store.artifact_path(slot.current).write_bytes(b"bit rot")
    fresh = Device(device.store.root, transport=repo.transport(), config=FAST)
    assert fresh.predict([[1.0, 1.0, 1.0]]).labels.tolist() == [1]  # v1, the previous


def test_the_device_does_not_load_a_trainer() -> None:
    """trust, store, updater, transfer, faults and device import nothing heavy (a phone has no sklearn)."""
    import subprocess
    import sys

    code = ("import sys, device_sim.trust, device_sim.store, device_sim.updater, device_sim.transfer, "
            "device_sim.faults, device_sim.device; print(sorted(m for m in ('sklearn', 'onnx', "
            "'skl2onnx', 'lightgbm', 'onnxmltools', 'pandas', 'fastapi', 'sqlmodel') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[2])
    assert out.stdout.strip() == "[]"


class _StaleKeepAlive(httpx.AsyncBaseTransport):
    """The first GET of the index dies as on a keep-alive connection the server just closed."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner, self.dropped = inner, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/index") and not self.dropped:
            self.dropped += 1
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return await self.inner.handle_async_request(request)


def test_a_stale_keep_alive_connection_is_retried_once(repo: Repo, tmp_path: Path) -> None:
    repo.publish("m", 1, ort_model(1.0), index_version=1)
    stale = _StaleKeepAlive(repo.transport())
    device = Device.register(tmp_path / "d", server="http://repo.test", enroll_token="mse_good",
                             platform="linux", root_envelope=json.loads(repo.roots[1]),
                             device_id="dev-1", transport=stale, config=FAST)
    result = device.sync()
    assert result.status == "ok" and [o.outcome for o in result.outcomes] == ["installed"]
    assert stale.dropped == 1


class _TrackedStream(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self.data, self.read_to_end = data, False

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        yield self.data
        self.read_to_end = True


class _Tracking(httpx.AsyncBaseTransport):
    """Records whether each small answer was read to its end: httpx drops the keep-alive
    connection of a streamed response closed unread."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner, self.streams = inner, []  # type: list[tuple[int, _TrackedStream]]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if response.status_code in (200, 206):
            return response
        stream = _TrackedStream(await response.aread())
        self.streams.append((response.status_code, stream))
        return httpx.Response(response.status_code, headers=response.headers, stream=stream,
                              request=request)


def test_304_and_404_answers_are_read_to_the_end(repo: Repo, tmp_path: Path) -> None:
    repo.publish("m", 1, ort_model(1.0), index_version=1)
    tracking = _Tracking(repo.transport())
    device = Device.register(tmp_path / "d", server="http://repo.test", enroll_token="mse_good",
                             platform="linux", root_envelope=json.loads(repo.roots[1]),
                             device_id="dev-1", transport=tracking, config=FAST)
    device.sync()
    assert device.sync().status == "not_modified"
    statuses = {status for status, _ in tracking.streams}
    assert {304, 404} <= statuses
    assert all(s.read_to_end for _, s in tracking.streams)


def test_status_words_are_the_typescript_clients() -> None:
    """Model outcomes and report kinds are the same sets; the sync-level words the two
    clients share (a stale index, a failed check, the network) are spelt the same."""
    import re
    from typing import get_args

    from device_sim.store import ReportKind
    from device_sim.updater import ModelOutcomeKind, SyncStatus

    core = Path(__file__).parents[2] / "react-native-stub" / "src" / "core"
    client, reports = (core / "client.ts").read_text(), (core / "reports.ts").read_text()

    def words(pattern: str, text: str) -> set[str]:
        found = re.search(pattern, text)
        assert found, pattern
        return set(re.findall(r'"(\w+)"', found.group(1)))

    # "staged" is the app's `activation: "next-start"` (docs/mobile.md), which the Python
    # device, a process without an app's cold starts, does not have
    # "held" is a shadow candidate's outcome (check 2.7): the TypeScript client has it in its
    # ShadowResult, apart from the models it installs
    installs = set(get_args(ModelOutcomeKind)) - {"held"}
    assert words(r'outcome: ("installed"[^;]*);', client) - {"staged"} == installs
    assert "held" in words(r'outcome: ("held"[^;]*);', client)
    assert words(r"export type ReportKind =([^;]*);", reports) == set(get_args(ReportKind))
    outcome = words(r"export type SyncOutcome = ([^;]*);", client)
    assert outcome & set(get_args(SyncStatus)) == {"stale", "failed", "offline"}
