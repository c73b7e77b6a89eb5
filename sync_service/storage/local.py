"""Blobs in a local directory. Writes go to a temporary file in the same directory,
are fsynced, then renamed into place: a crash leaves the old state or the new, never half."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO

from packager.fsutil import TMP_MARK, write_atomic_with
from sync_service.errors import BlobNotFound, StorageError
from sync_service.storage.base import Storage, check_key


class LocalStorage(Storage):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create blob directory {self.root}: {exc.strerror}") from None

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(f"no object {key}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {key}: {exc.strerror}") from None

    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        return self._open(key)

    @contextlib.contextmanager
    def _open(self, key: str) -> Iterator[BinaryIO]:
        try:
            fh = self._path(key).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(f"no object {key}") from None
        except OSError as exc:
            raise StorageError(f"cannot open {key}: {exc.strerror}") from None
        with fh:
            yield fh

    def _write(self, key: str, copy: bytes | Path) -> None:
        dest = self._path(key)

        def write(out: BinaryIO) -> None:
            if isinstance(copy, bytes):
                out.write(copy)
            else:
                with copy.open("rb") as src:
                    shutil.copyfileobj(src, out, 1024 * 1024)

        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            write_atomic_with(dest, write)
        except OSError as exc:
            raise StorageError(f"cannot write {key}: {exc.strerror}") from None

    def put(self, key: str, source: Path) -> None:
        self._write(key, Path(source))

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write(key, bytes(data))

    def remove(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot remove {key}: {exc.strerror}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(f"no object {key}") from None
        except OSError as exc:
            raise StorageError(f"cannot stat {key}: {exc.strerror}") from None

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def sweep(self, older_than_s: float) -> int:
        # write_atomic_with's temporaries (``<name>.tmp-<pid>-<hex>``, beside the object)
        # of a killed process: never renamed, never read, never removed by anyone else.
        cutoff = time.time() - older_than_s
        removed = 0
        for directory, _dirs, names in os.walk(self.root):
            for name in names:
                if TMP_MARK not in name:
                    continue
                path = Path(directory) / name
                try:
                    if path.lstat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                except OSError:  # gone already (another replica's sweep), or unreadable
                    continue
        return removed

    def check(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK):
            raise StorageError(f"blob directory {self.root} is not a writable directory")
