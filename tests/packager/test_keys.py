"""`modelsync keys init | rotate | show` and key files, through the CLI."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from device_sim import trust
from device_sim.errors import RootChainError
from packager.cli import main
from packager.errors import ExpiredError, KeyLoadError, UnknownKeyError
from packager.keys import load_private_key, load_public_key, load_root
from packager.manifest import keyid_of, sign, verify_root_self


def _root_json(path: Path) -> Any:
    return json.loads(path.read_text())


def test_init_writes_keys_and_signed_root(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    assert main(["keys", "init", str(d), "--publisher-keys", "3", "--publisher-threshold", "2"]) == 0
    for name in ("root", "publisher", "publisher-2", "publisher-3", "index"):
        key = d / f"{name}.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert keyid_of(load_private_key(key).public_key()) == keyid_of(load_public_key(d / f"{name}.pub"))
    root = load_root(d / "root.json")
    assert root.version == 1
    assert (root.roles["publisher"].threshold, len(root.roles["publisher"].keyids)) == (2, 3)
    assert (d / "roots" / "1.root.json").read_text() == (d / "root.json").read_text()


def test_init_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "keys"
    assert main(["keys", "init", str(d)]) == 0
    before = (d / "root.json").read_bytes()
    assert main(["keys", "init", str(d)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (d / "root.json").read_bytes() == before
    assert main(["keys", "init", str(d), "--force"]) == 0
    assert (d / "root.json").read_bytes() != before


def test_init_threshold_above_key_count_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "init", str(tmp_path / "k"), "--index-threshold", "2"]) == 2
    assert "threshold 2 exceeds" in capsys.readouterr().err
    assert not (tmp_path / "k" / "root.json").exists()


def test_passphrase_protected_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "keys"
    monkeypatch.setenv("PASS", "correct horse")
    assert main(["keys", "init", str(d), "--passphrase-env", "PASS"]) == 0
    assert b"ENCRYPTED" in (d / "publisher.key").read_bytes()
    load_private_key(d / "publisher.key", b"correct horse")
    with pytest.raises(KeyLoadError, match="is encrypted"):
        load_private_key(d / "publisher.key")
    with pytest.raises(KeyLoadError, match="wrong passphrase"):
        load_private_key(d / "publisher.key", b"wrong")
    # Rotation needs the root keys: without the passphrase it stops cleanly and writes nothing.
    monkeypatch.delenv("MODELSYNC_KEY_PASSPHRASE", raising=False)
    assert main(["keys", "rotate", str(d), "--role", "index"]) == 2
    assert "is encrypted" in capsys.readouterr().err
    assert load_root(d / "root.json").version == 1
    assert main(["keys", "rotate", str(d), "--role", "index", "--passphrase-env", "UNSET_VAR_X"]) == 2
    assert "UNSET_VAR_X is not set" in capsys.readouterr().err
    assert main(["keys", "rotate", str(d), "--role", "index", "--passphrase-env", "PASS"]) == 0
    assert load_root(d / "root.json").version == 2


def test_missing_and_garbage_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyLoadError, match="not found"):
        load_private_key(tmp_path / "nope.key")
    (tmp_path / "junk.key").write_text("not a key")
    with pytest.raises(KeyLoadError, match="not a PEM private key"):
        load_private_key(tmp_path / "junk.key")


def test_rotate_publisher_revokes_and_chains(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    main(["keys", "init", str(d)])
    v1 = load_root(d / "root.json")
    old_id = v1.roles["publisher"].keyids[0]
    assert main(["keys", "rotate", str(d), "--role", "publisher", "--revoke", old_id[:10]]) == 0
    v2 = trust.next_root(v1, _root_json(d / "roots" / "2.root.json"))
    assert old_id not in v2.roles["publisher"].keyids
    assert len(v2.roles["publisher"].keyids) == 1
    assert v2.roles["root"].keyids == v1.roles["root"].keyids
    new_key = load_private_key(d / "publisher.key")
    assert keyid_of(new_key.public_key()) == v2.roles["publisher"].keyids[0]
    assert (d / "publisher.key.revoked-v2").exists()


def test_rotate_root_is_signed_by_old_and_new_root_keys(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    main(["keys", "init", str(d)])
    v1 = load_root(d / "root.json")
    old = v1.roles["root"].keyids[0]
    assert main(["keys", "rotate", str(d), "--role", "root", "--revoke", old]) == 0
    raw = _root_json(d / "root.json")
    v2 = trust.next_root(v1, raw)
    assert old not in v2.roles["root"].keyids
    signers = {s["keyid"] for s in raw["signatures"]}
    assert old in signers and v2.roles["root"].keyids[0] in signers
    verify_root_self(raw)


def test_rotate_unknown_keyid_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "keys"
    main(["keys", "init", str(d)])
    assert main(["keys", "rotate", str(d), "--role", "index", "--revoke", "ffff"]) == 2
    assert "no index key with id ffff" in capsys.readouterr().err
    assert load_root(d / "root.json").version == 1


def test_show_lists_roles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "keys"
    main(["keys", "init", str(d)])
    capsys.readouterr()
    assert main(["keys", "show", str(d)]) == 0
    out = capsys.readouterr().out
    assert "publisher" in out and load_root(d / "root.json").roles["index"].keyids[0][:10] in out


def test_rotated_root_without_the_old_keys_signature_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    main(["keys", "init", str(d)])
    v1 = load_root(d / "root.json")
    old = v1.roles["root"].keyids[0]
    assert main(["keys", "rotate", str(d), "--role", "root", "--revoke", old]) == 0
    raw = _root_json(d / "roots" / "2.root.json")
    raw["signatures"] = [s for s in raw["signatures"] if s["keyid"] != old]
    with pytest.raises(UnknownKeyError, match="by v1 keys"):
        trust.next_root(v1, raw)
    # v3 made after v2 chains from v2, not from v1.
    assert main(["keys", "rotate", str(d), "--role", "publisher"]) == 0
    v3 = _root_json(d / "roots" / "3.root.json")
    with pytest.raises(RootChainError, match="v3 when asked for v2"):
        trust.next_root(v1, v3)
    assert trust.next_root(trust.next_root(v1, _root_json(d / "roots" / "2.root.json")), v3, 2).version == 3


def test_load_root_refuses_an_expired_root_unless_told(tmp_path: Path) -> None:
    # The packager will not build against a root every device would refuse (check 1.6).
    d = tmp_path / "keys"
    main(["keys", "init", str(d)])
    signed = _root_json(d / "root.json")["signed"]
    signed["expires"] = "2020-01-01T00:00:00Z"
    (d / "root.json").write_text(json.dumps(sign(signed, [load_private_key(d / "root.key")])))
    with pytest.raises(ExpiredError, match="root v1 expired"):
        load_root(d / "root.json")
    assert load_root(d / "root.json", check_expired=False).version == 1
