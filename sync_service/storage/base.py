"""Blob storage behind one small interface (after securesystemslib's ``storage.py``).

Keys are slash-separated relative names (``blobs/<sha256>``, ``deltas/<from>-<to>``).
Backends turn their own failures into ``StorageError``; a missing key is
``BlobNotFound`` (a StorageError too; both in sync_service/errors.py), so callers can
answer 404 for it and 503 otherwise.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO

from sync_service.errors import StorageError

_KEY = re.compile(r"^[a-z0-9]+(/[A-Za-z0-9._-]+)+$")


def check_key(key: str) -> str:
    if not _KEY.match(key) or ".." in key.split("/"):
        raise StorageError(f"invalid storage key {key!r}")
    return key


def blob_key(sha256: str) -> str:
    return f"blobs/{sha256}"


def delta_key(from_sha: str, to_sha: str) -> str:
    return f"deltas/{from_sha}-{to_sha}"


class Storage(ABC):
    """Immutable-object store. ``put`` is atomic: readers see the whole object or none."""

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def open(self, key: str) -> AbstractContextManager[BinaryIO]: ...

    @abstractmethod
    def put(self, key: str, source: Path) -> None:
        """Store the file at ``source`` under ``key`` (the file is left in place)."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def remove(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int: ...

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        """A time-limited URL a client may download from directly, or None."""
        return None

    def local_path(self, key: str) -> Path | None:
        """The file on this machine's disk, when there is one (lets routes sendfile)."""
        return None

    def iter_range(self, key: str, start: int, end: int, chunk: int = 256 * 1024) -> Iterator[bytes]:
        """Bytes ``start..end`` inclusive, in chunks."""
        with self.open(key) as fh:
            fh.seek(start)
            left = end - start + 1
            while left > 0:
                data = fh.read(min(chunk, left))
                if not data:
                    raise StorageError(f"{key}: object shorter than expected")
                left -= len(data)
                yield data

    def sweep(self, older_than_s: float) -> int:
        """Remove what writers killed mid-write left behind, if older than ``older_than_s``
        (a younger one may be a write in progress, perhaps of another replica); the count."""
        return 0

    @abstractmethod
    def check(self) -> None:
        """Raise StorageError unless the store is reachable and usable (readiness)."""
