"""packager.fsutil: a replaced file holds the old bytes or the new, and no temporary file
outlives the write."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from packager.fsutil import write_atomic, write_new


def test_write_atomic_replaces_and_leaves_nothing_beside(tmp_path: Path) -> None:
    target = tmp_path / "root.json"
    write_atomic(target, b"v1")
    write_atomic(target, b"v2", mode=0o600)
    assert target.read_bytes() == b"v2"
    assert [p.name for p in tmp_path.iterdir()] == ["root.json"]
    key = tmp_path / "index.key"
    write_atomic(key, b"secret", mode=0o600)
    assert stat.S_IMODE(key.stat().st_mode) & 0o077 == 0


def test_failed_replace_keeps_the_target_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "inside").write_bytes(b"old")
    with pytest.raises(OSError):
        write_atomic(target, b"new")
    assert (target / "inside").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["busy"]


def test_write_new_refuses_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "a.ort"
    write_new(target, b"first")
    with pytest.raises(FileExistsError):
        write_new(target, b"second")
    assert target.read_bytes() == b"first"
