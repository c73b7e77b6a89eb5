"""`modelsync keys init|show|rotate|renew --json`: the root's version, expiry and roles, errors too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from packager import exit_codes
from packager.cli import main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, object]:
    code = main(list(argv))
    return code, json.loads(capsys.readouterr().out)


def test_every_keys_command_prints_the_root_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    code, init = _run(capsys, "keys", "init", str(keys), "--lifetime-days", "20", "--json")
    assert code == 0
    assert isinstance(init, dict)
    assert init["version"] == 1 and init["expires_soon"] is True
    assert set(init["roles"]) == {"root", "publisher", "index", "offline"}
    assert init["root"] == str(keys / "root.json")

    code, shown = _run(capsys, "keys", "show", str(keys), "--json")
    assert code == 0 and shown == init

    old_index = init["roles"]["index"]["keyids"][0]
    code, rotated = _run(capsys, "keys", "rotate", str(keys), "--role", "index", "--revoke", old_index,
                          "--lifetime-days", "20", "--json")
    assert code == 0 and isinstance(rotated, dict)
    assert rotated["version"] == 2 and old_index not in rotated["roles"]["index"]["keyids"]

    code, renewed = _run(capsys, "keys", "renew", str(keys), "--json")
    assert code == 0 and isinstance(renewed, dict)
    assert renewed["version"] == 3 and renewed["expires_soon"] is False
    assert renewed["expires"] > rotated["expires"]
    assert renewed["roles"] == rotated["roles"]


def test_a_keys_error_under_json_is_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys"
    assert main(["keys", "init", str(keys), "--json"]) == 0
    capsys.readouterr()
    code, error = _run(capsys, "keys", "renew", str(keys), "--lifetime-days", "0", "--json")
    assert code == exit_codes.USAGE
    message = "--lifetime-days must be at least 1"
    assert error == {"error": {"code": "usage", "message": message, "exit_code": code}}
