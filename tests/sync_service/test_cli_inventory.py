"""The CLI's HTTP surface beside releases: releases named by fleet and channel, promote,
models and devices listings, retiring a device, admin over HTTP; exit codes by class and
errors as JSON under --json. A real server on loopback, SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from packager import exit_codes
from packager.cli import main
from tests.sync_service.fleet_helpers import bearer, event, publish, register, report


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, live_server: str, publisher_token: str, tmp_path: Path) -> str:
    monkeypatch.setenv("MODELSYNC_TOKEN", publisher_token)
    monkeypatch.setenv("MODELSYNC_SERVER", live_server)
    monkeypatch.setenv("MODELSYNC_CONFIG", str(tmp_path / "absent.toml"))
    return live_server


@pytest.fixture
def published(
    client: TestClient, auth: dict[str, str], fleet: str, bundle_factory: Callable[..., Path]
) -> None:
    for v in (1, 2):
        publish(client, auth, bundle_factory(version=v, seed=v))


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_releases_by_name_and_promote(
    cli_env: str, published: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(capsys, "admin", "channel", "create", "beta", "--fleet", "field", "--server", cli_env)[0] == 0
    code, out, _ = cli(capsys, "release", "create", "--fleet", "field", "--channel", "beta",
                       "--model", "demo", "--version", "2", "--percent", "100", "--json")
    assert code == 0 and json.loads(out)["channel"] == "beta"
    code, out, _ = cli(capsys, "release", "promote", "--fleet", "field", "--from", "beta", "--to", "stable",
                       "--percent", "10", "--json")
    promoted = json.loads(out)
    assert code == 0 and (promoted["channel"], promoted["version"], promoted["percent"]) == ("stable", 2, 10)
    code, out, _ = cli(capsys, "release", "set", "--fleet", "field", "--percent", "50", "--json")
    assert code == 0 and json.loads(out)["id"] == promoted["id"] and json.loads(out)["percent"] == 50
    code, out, _ = cli(capsys, "release", "status", "--fleet", "field", "--channel", "stable", "--json")
    assert code == 0 and json.loads(out)["release"]["id"] == promoted["id"]
    code, out, _ = cli(capsys, "release", "halt", "--fleet", "field", "--reason", "looks wrong")
    assert code == 0 and "halted" in out
    assert cli(capsys, "release", "resume", "--fleet", "field")[0] == 0
    code, _, err = cli(capsys, "release", "status", "--fleet", "field", "--channel", "nightly")
    assert code == exit_codes.NOT_FOUND and "has no channel 'nightly'" in err and "beta" in err


def test_release_list_for_a_fleet_that_does_not_exist(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "release", "list", "--fleet", "nope")
    assert code == exit_codes.NOT_FOUND and out == ""
    assert err.count("\n") == 1 and "no fleet 'nope'" in err and "admin fleet list" in err
    code, out, _ = cli(capsys, "release", "list", "--fleet", "nope", "--json")
    assert code == exit_codes.NOT_FOUND
    assert json.loads(out)["error"] == {
        "code": "unknown_fleet", "message": json.loads(out)["error"]["message"], "exit_code": 4,
    }


def test_models_and_devices_over_http(
    cli_env: str,
    published: None,
    client: TestClient,
    enrollment_token: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = cli(capsys, "models", "list", "--json")
    assert code == 0 and json.loads(out) == [{"name": "demo", "versions": [1, 2], "latest": 2}]
    code, out, _ = cli(capsys, "models", "show", "demo", "2")
    assert code == 0 and "demo v2" in out
    token = register(client, enrollment_token, "dev-a-rather-long-device-identifier-0001")
    report(client, token, "dev-a-rather-long-device-identifier-0001", [event("installed", version=1)])
    code, out, _ = cli(capsys, "devices", "list", "--fleet", "field")
    # not a terminal: the table is as wide as its rows, nothing cut with an ellipsis
    assert code == 0 and "dev-a-rather-long-device-identifier-0001" in out and "…" not in out
    register(client, enrollment_token, "dev-b")
    long_id = "dev-a-rather-long-device-identifier-0001"
    code, out, _ = cli(capsys, "devices", "list", "--search", "rather", "--json")
    assert code == 0 and [d["device_id"] for d in json.loads(out)] == [long_id]
    code, out, _ = cli(capsys, "devices", "list", "--after", "dev-a", "--limit", "1", "--json")
    assert code == 0 and [d["device_id"] for d in json.loads(out)] == [long_id]
    code, out, _ = cli(capsys, "devices", "show", "dev-a-rather-long-device-identifier-0001", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["installed"] == {"demo": 1} and shown["retired"] is False
    code, out, _ = cli(capsys, "devices", "retire", "dev-a-rather-long-device-identifier-0001")
    assert code == 0 and "retired" in out
    assert client.get("/v1/channels/stable/index", headers=bearer(token)).status_code == 401
    code, _, err = cli(capsys, "devices", "show", "dev-nobody")
    assert code == exit_codes.NOT_FOUND and "no device 'dev-nobody'" in err


def test_admin_over_http_needs_scope_admin(
    cli_env: str, make_token: Callable[..., str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "admin", "fleet", "create", "north", "--server", cli_env, "--json")
    assert code == 0 and json.loads(out)["channels"] == ["stable"]
    code, _, err = cli(capsys, "admin", "fleet", "create", "north", "--server", cli_env)
    assert code == exit_codes.CONFLICT and "already exists" in err
    code, out, _ = cli(capsys, "admin", "token", "create", "--enroll", "--fleet", "north",
                       "--server", cli_env, "--json")
    created = json.loads(out)
    assert code == 0 and created["token"].startswith("mse_") and created["fleet"] == "north"
    code, out, _ = cli(capsys, "admin", "token", "list", "--server", cli_env, "--json")
    assert created["id"] in [t["id"] for t in json.loads(out)] and "token" not in json.loads(out)[0]
    assert cli(capsys, "admin", "token", "revoke", str(created["id"]), "--server", cli_env)[0] == 0
    weak = tmp_path / "weak.token"
    weak.write_text(make_token("publisher", scopes=("release",)))
    code, _, err = cli(capsys, "admin", "fleet", "list", "--server", cli_env, "--token-file", str(weak))
    assert code == exit_codes.UNAUTHORIZED and "missing_scope" in err


def test_unreachable_server_and_usage_errors_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSYNC_TOKEN", "msp_x")
    monkeypatch.setenv("MODELSYNC_CONFIG", str(tmp_path / "absent.toml"))
    code, out, err = cli(capsys, "models", "list", "--server", "http://127.0.0.1:9", "--json")
    assert code == exit_codes.UNREACHABLE and json.loads(out)["error"]["code"] == "unreachable"
    assert "cannot reach" in err
    with pytest.raises(SystemExit) as exc:
        main(["release", "set", "--percent", "120", "--json"])
    assert exc.value.code == exit_codes.USAGE
    assert "percent must be within 0..100" in json.loads(capsys.readouterr().out)["error"]["message"]
