"""`modelsync publish` against a real server on loopback: where the token comes from, and
one-line errors for each refusal."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from packager.cli import main


def publish(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["publish", *args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MODELSYNC_TOKEN", raising=False)
    monkeypatch.delenv("MODELSYNC_SERVER", raising=False)
    monkeypatch.setenv("MODELSYNC_CONFIG", str(tmp_path / "no-config.toml"))


def test_publish_with_env_token_then_idempotent(
    live_server: str,
    publisher_token: str,
    bundle_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MODELSYNC_TOKEN", publisher_token)
    rc, out, _ = publish(capsys, str(bundle_dir), "--server", live_server)
    assert rc == 0 and out.startswith("published demo v1")
    rc, out, _ = publish(capsys, str(bundle_dir), "--server", live_server)
    assert rc == 0 and "already published" in out


def test_publish_with_config_file_and_token_file(
    live_server: str,
    publisher_token: str,
    bundle_factory: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'server = "{live_server}"\ntoken = "{publisher_token}"\n')
    monkeypatch.setenv("MODELSYNC_CONFIG", str(config))
    rc, out, _ = publish(capsys, str(bundle_factory(version=1)), "--json")
    assert rc == 0 and '"version": 1' in out
    token_file = tmp_path / "token"
    token_file.write_text(publisher_token + "\n")
    rc, out, _ = publish(
        capsys, str(bundle_factory(version=2)), "--server", live_server, "--token-file", str(token_file)
    )
    assert rc == 0 and out.startswith("published demo v2")


def test_refusals_are_one_line(
    live_server: str,
    make_token: Callable[..., str],
    publisher_token: str,
    bundle_factory: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MODELSYNC_TOKEN", make_token("publisher", scopes=("release",)))
    rc, _, err = publish(capsys, str(bundle_factory(seed=1)), "--server", live_server)
    assert (
        rc == 6  # UNAUTHORIZED
        and err == "modelsync: error: POST /v1/bundles: 403 missing_scope: token lacks scope 'publish'\n"
    )
    monkeypatch.setenv("MODELSYNC_TOKEN", publisher_token)
    assert publish(capsys, str(bundle_factory(seed=1)), "--server", live_server)[0] == 0
    rc, _, err = publish(capsys, str(bundle_factory(seed=2)), "--server", live_server)
    assert rc == 5 and "409 version_exists" in err and err.count("\n") == 1


def test_local_problems(
    publisher_token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "not-a-bundle"
    bundle.mkdir()
    rc, _, err = publish(capsys, str(bundle), "--server", "http://127.0.0.1:9")
    assert rc == 2 and "no API token" in err
    monkeypatch.setenv("MODELSYNC_TOKEN", publisher_token)
    rc, _, err = publish(capsys, str(bundle), "--server", "ftp://x")
    assert rc == 2 and "must start with http" in err
    rc, _, err = publish(capsys, str(bundle), "--server", "http://127.0.0.1:9")
    assert rc == 2 and "has no manifest.json" in err
    (bundle / "manifest.json").write_text("{}")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc, _, err = publish(capsys, str(bundle), "--server", f"http://127.0.0.1:{port}")
    assert rc == 7 and "cannot reach" in err
