"""Durable-write helpers shared by the packager and the device (no heavy imports).

``write_atomic`` is the one way modelsync replaces a file: a temporary file beside the
target, fsynced, renamed over it, and the directory fsynced so the rename itself survives
a power cut. A reader sees the old bytes or the new, never half.
"""

from __future__ import annotations

import os
from pathlib import Path

TMP_MARK = ".tmp-"  # temporary files are "<name>.tmp-<pid>", beside their target


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable: the directory entry itself must reach disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_fsynced(path: Path, data: bytes, flags: int, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_new(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Create ``path`` (it must not exist) with ``data`` on disk; the caller fsyncs the
    directory once it has written all its files (a staged bundle)."""
    _write_fsynced(path, data, os.O_EXCL, mode)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably (see the module docstring)."""
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")
    try:
        _write_fsynced(tmp, data, os.O_TRUNC, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
