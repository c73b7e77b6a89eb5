"""Durable-write helpers shared by the packager and the device (no heavy imports).

``write_atomic`` is the one way modelsync replaces a file: a temporary file beside the
target, fsynced, renamed over it, and the directory fsynced so the rename itself survives
a power cut. A reader sees the old bytes or the new, never half.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

# Temporary files are "<name>.tmp-<pid>-<random>", beside their target: unique per writer
# (the service writes from many threads), and found by TMP_MARK when a crash leaves one.
TMP_MARK = ".tmp-"


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable: the directory entry itself must reach disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_fsynced(path: Path, write: Callable[[BinaryIO], object], mode: int) -> None:
    """Create ``path`` (it must not exist), fill it with ``write`` and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())


def write_new(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Create ``path`` (it must not exist) with ``data`` on disk; the caller fsyncs the
    directory once it has written all its files (a staged bundle)."""
    _create_fsynced(path, lambda fh: fh.write(data), mode)


def temporary_beside(path: Path) -> Path:
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def write_atomic_with(
    path: Path,
    write: Callable[[BinaryIO], object],
    mode: int = 0o644,
    before_replace: Callable[[], None] | None = None,
) -> None:
    """Replace ``path`` atomically and durably with what ``write`` writes to a file object
    (a stream copy needs no bytes in memory). ``before_replace`` runs after the fsync and
    before the rename: the device's crash tests stop there."""
    tmp = temporary_beside(path)
    try:
        _create_fsynced(tmp, write, mode)
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably (see the module docstring)."""
    write_atomic_with(path, lambda fh: fh.write(data), mode)
