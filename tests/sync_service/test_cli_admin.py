"""`modelsync admin` in-process through the real console-script entry point, on SQLite and
(when configured) PostgreSQL: fleets, channels, tokens shown once and stored as hashes."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session, select

from packager.cli import main
from sync_service.auth import hash_token
from sync_service.core.config import Settings
from sync_service.db import make_engine
from sync_service.models import ApiToken


@pytest.fixture
def db_args(settings: Settings) -> list[str]:
    if settings.database_url is None:
        return ["--data-dir", str(settings.data_dir)]
    return ["--database-url", settings.database_url]


def admin(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["admin", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_fleet_and_channel_lifecycle(db_args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = admin(capsys, "fleet", "create", "Bad Name", *db_args)
    assert rc == 2 and "bad fleet name 'Bad Name'" in err
    assert admin(capsys, "fleet", "create", "field", *db_args)[0] == 0
    rc, _, err = admin(capsys, "fleet", "create", "field", *db_args)
    assert rc == 5 and "fleet 'field' already exists" in err
    assert admin(capsys, "channel", "create", "beta", "--fleet", "field", *db_args)[0] == 0
    rc, _, err = admin(capsys, "channel", "create", "beta", "--fleet", "field", *db_args)
    assert rc == 5 and "already has a channel 'beta'" in err
    rc, _, err = admin(capsys, "channel", "create", "beta", "--fleet", "nope", *db_args)
    assert rc == 4 and "no fleet 'nope'" in err
    rc, out, _ = admin(capsys, "channel", "list", *db_args)
    assert rc == 0 and "beta" in out and "stable" in out
    rc, out, _ = admin(capsys, "fleet", "list", *db_args)
    assert rc == 0 and "field" in out


def test_publisher_token_shown_once_stored_as_hash(
    db_args: list[str], settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = admin(capsys, "token", "create", "--scope", "publish,release", "--name", "ci", *db_args)
    assert rc == 0
    token = out.strip()
    assert token.startswith("msp_") and len(token) > 40
    assert "shown once" in err
    engine = make_engine(settings.resolved_database_url)
    with Session(engine) as s:
        rows = s.exec(select(ApiToken)).all()
    engine.dispose()
    assert [(r.token_hash, r.scopes, r.kind) for r in rows] == [
        (hash_token(token), "publish,release", "publisher")
    ]
    assert all(token not in (r.token_hash, r.name) for r in rows)
    rc, out, _ = admin(capsys, "token", "list", *db_args)
    assert "publish,release" in out and token not in out


def test_enrollment_token_and_revoke(db_args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = admin(capsys, "token", "create", "--enroll", "--fleet", "field", *db_args)
    assert rc == 4 and "no fleet 'field'" in err
    admin(capsys, "fleet", "create", "field", *db_args)
    rc, out, err = admin(capsys, "token", "create", "--enroll", "--fleet", "field", *db_args)
    assert rc == 0 and out.strip().startswith("mse_")
    token_id = err.split("token id ")[1].split()[0]
    assert admin(capsys, "token", "revoke", token_id, *db_args)[0] == 0
    rc, out, _ = admin(capsys, "token", "list", *db_args)
    assert "enrollment" not in out
    rc, out, _ = admin(capsys, "token", "list", "--all", *db_args)
    assert "enrollment" in out
    rc, _, err = admin(capsys, "token", "revoke", "999", *db_args)
    assert rc == 4 and "no token with id 999" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scope", "root"], "unknown scope 'root'"),
        ([], "at least one scope"),
        (["--enroll"], "--enroll needs --fleet"),
        (["--enroll", "--fleet", "f", "--scope", "publish"], "carry no scopes"),
        (["--fleet", "f", "--scope", "publish"], "add --enroll"),
    ],
)
def test_bad_token_requests(
    db_args: list[str], capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    rc, out, err = admin(capsys, "token", "create", *args, *db_args)
    assert rc == 2 and message in err and out == ""


def test_admin_refuses_unmigrated_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "new"
    rc, _, err = admin(capsys, "fleet", "list", "--data-dir", str(data))
    assert rc == 2 and f"run `modelsync admin migrate --data-dir {data}`" in err
    rc, out, _ = admin(capsys, "migrate", "--data-dir", str(data))
    assert rc == 0 and "empty →" in out
    rc, out, _ = admin(capsys, "migrate", "--data-dir", str(data))
    assert rc == 0 and "up to date" in out
    assert admin(capsys, "fleet", "list", "--data-dir", str(data))[0] == 0


def test_env_settings_apply_and_flags_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env_dir, flag_dir = tmp_path / "env", tmp_path / "flag"
    monkeypatch.setenv("MODELSYNC_DATA_DIR", str(env_dir))
    assert admin(capsys, "migrate")[0] == 0
    assert (env_dir / "modelsync.db").exists()
    assert admin(capsys, "migrate", "--data-dir", str(flag_dir))[0] == 0
    assert (flag_dir / "modelsync.db").exists()
