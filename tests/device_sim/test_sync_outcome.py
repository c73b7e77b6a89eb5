"""What `modelsync device sync` came to: exit codes that tell up to date, updated, refused
and failed apart (docs/device.md "Exit codes"), the same in --json, and why nothing was
installed when nothing was. Against a repository transport, then the CLI on a live service."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from device_sim import sync_outcome
from device_sim.device import Device
from device_sim.transfer import SyncConfig
from packager import exit_codes
from packager.cli import main as cli_main
from packager.rollout import rollout_bucket
from tests.device_sim.forge import doc_bytes, entry, index_doc, manifest_doc, ort_model, sha
from tests.device_sim.repo import Repo
from tests.device_sim.service import admin, make_token, publish_and_release, service_app
from tests.sync_service.live import serve_in_thread

__all__ = ["admin", "service_app"]  # fixtures

FAST = SyncConfig(connect_timeout=1, read_timeout=1, deadline=10)


def enroll(repo: Repo, state: Path, device_id: str = "dev-1") -> Device:
    return Device.register(state, server="http://repo.test", enroll_token="mse_good", platform="linux",
                           root_envelope=json.loads(repo.roots[1]), device_id=device_id,
                           transport=repo.transport(), config=FAST)


def outcome(device: Device) -> tuple[int, dict[str, object]]:
    result = device.sync()
    doc = sync_outcome.as_json(result)
    json.dumps(doc)  # serialisable as it stands
    assert doc["exit_code"] == sync_outcome.exit_code(result)
    return sync_outcome.exit_code(result), doc


def test_exit_codes_tell_the_outcomes_apart(tmp_path: Path) -> None:
    repo = Repo(deltas=False)
    repo.publish("m", 1, ort_model(1.0), index_version=1)
    device = enroll(repo, tmp_path / "d")
    code, doc = outcome(device)
    assert (code, doc["status"]) == (exit_codes.UPDATED, "updated")
    code, doc = outcome(device)
    assert (code, doc["status"]) == (exit_codes.OK, "up_to_date")
    assert doc["why_nothing"] == ["m: not_newer: v1 is installed"]

    # spoilt on the way, twice: a network failure, not a refusal
    v2 = ort_model(2.0)
    repo.publish("m", 2, v2, index_version=2)
    repo.blobs[sha(v2)] = v2[:50] + bytes([v2[50] ^ 1]) + v2[51:]
    code, doc = outcome(device)
    assert (code, doc["status"]) == (exit_codes.UNREACHABLE, "failed")
    [model] = doc["models"]  # type: ignore[misc]
    assert (model["outcome"], model["reason"], model["failure"]) == ("failed", "hash_mismatch", "transport")

    # a manifest signed by no publisher key: refused
    attacker = manifest_doc(repo.keys, "m", 3, {"cpu": ort_model(3.0)}, signers=[repo.keys.index[0]])
    mbytes = repo.blobs[repo.add_blob(doc_bytes(attacker))]
    repo.set_index(index_doc(repo.keys, [entry("m", 3, mbytes)], version=3, fleet=repo.fleet))
    code, doc = outcome(device)
    assert (code, doc["status"]) == (exit_codes.VERIFICATION, "refused")
    assert doc["models"][0]["failure"] == "verification"  # type: ignore[index]

    repo.down = True
    code, doc = outcome(device)
    assert (code, doc["status"], doc["sync"]) == (exit_codes.UNREACHABLE, "failed", "offline")
    assert doc["error"]["code"] == "download"  # type: ignore[index]


def test_why_nothing_names_the_rollout_bucket_the_runtime_and_the_metered_link(tmp_path: Path) -> None:
    repo = Repo(deltas=False)
    device_id = next(f"dev-{i}" for i in range(100) if rollout_bucket("s1", f"dev-{i}") >= 100)
    bucket = rollout_bucket("s1", device_id)
    percent = (bucket // 100) * 1.0  # buckets below percent*100 are in: this one is just out
    repo.publish("m", 1, ort_model(1.0), index_version=1, percent=percent)
    device = enroll(repo, tmp_path / "d", device_id)
    code, doc = outcome(device)
    assert code == exit_codes.OK and doc["models"] == []
    [skipped] = doc["skipped"]  # type: ignore[misc]
    assert (skipped["reason"], skipped["bucket"], skipped["percent"]) == ("outside_rollout", bucket, percent)
    assert f"this device's bucket is {bucket}" in doc["why_nothing"][0]  # type: ignore[index]
    assert f"rolled out to {percent:g}%" in doc["why_nothing"][0]  # type: ignore[index]

    repo.publish("m", 2, ort_model(2.0), index_version=2, manifest_kw={"ort_version": "99.0.0"})
    code, doc = outcome(device)
    assert code == exit_codes.VERIFICATION
    assert doc["why_nothing"][0].startswith("m v2: refused: runtime_too_old: ")  # type: ignore[index]
    code, doc = outcome(device)  # a permanent failure: never fetched again, and said so
    assert code == exit_codes.OK and doc["skipped"][0]["reason"] == "known_bad"  # type: ignore[index]

    repo.publish("m", 3, ort_model(3.0), index_version=3)
    ident = device.store.identity
    device.store.save_identity(ident.model_copy(update={"metered": True, "metered_max_bytes": 10}))
    code, doc = outcome(device)
    assert code == exit_codes.OK
    assert doc["why_nothing"] == ["m v3: metered: " + "deferred on a metered link until Wi-Fi "
                                  "(not urgent, larger than metered_max_bytes)"]


def test_cli_sync_json_and_exit_codes_against_a_live_server(
    service_app: FastAPI, admin: Callable[..., httpx.Response], make_bundle: Callable[..., Path],
    keys_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    enroll_token = make_token(service_app, "enrollment")
    publish_and_release(admin, make_bundle(1))
    state = tmp_path / "dev"
    with serve_in_thread(service_app) as url:
        assert cli_main(["device", "register", "--server", url, "--enroll-token", enroll_token, "--state",
                         str(state), "--platform", "linux", "--root", str(keys_dir / "root.json"),
                         "--device-id", "cli-json"]) == 0
        capsys.readouterr()
        assert cli_main(["device", "sync", "--state", str(state), "--json"]) == exit_codes.UPDATED
        first = json.loads(capsys.readouterr().out)
        assert cli_main(["device", "sync", "--state", str(state)]) == exit_codes.OK
        text = capsys.readouterr().out
    assert (first["status"], first["exit_code"]) == ("updated", 10)
    installed = [(m["model"], m["version"], m["outcome"]) for m in first["models"]]
    assert installed == [("fleet-iforest", 1, "installed")]
    assert "why: fleet-iforest: not_newer: v1 is installed" in text and "up_to_date (exit 0)" in text
    # the service gone: unreachable
    assert cli_main(["device", "sync", "--state", str(state), "--json"]) == exit_codes.UNREACHABLE
    gone = json.loads(capsys.readouterr().out)
    assert (gone["status"], gone["sync"]) == ("failed", "offline")
