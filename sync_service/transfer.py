"""Cheaper bytes on the wire: zstd-compressed copies and bsdiff4 deltas of blobs.

Both are derived from immutable, content-addressed blobs, so each is computed once and
cached in storage (``zstd/<sha256>``, ``deltas/<from>-<to>``); a cache entry can never go
stale. Computation happens on first request rather than at upload, so uploads stay fast
and only blobs someone downloads pay for it.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import bsdiff4

from packager.compression import zstd_copy
from packager.fsutil import temporary_beside
from sync_service.storage import BlobNotFound, Storage, blob_key, delta_key
from sync_service.storage.sweep import ZSTD_SCRATCH_PREFIX

# bsdiff holds both files and a suffix array (8 bytes per input byte) in memory: beyond
# this no delta is offered, and a process computes one delta at a time.
DELTA_MAX_BYTES = 32 * 1024 * 1024
_DELTA_SLOT = threading.Semaphore(1)
# ASCII digits only (``\d`` would take other scripts' digits, which int() reads too); the
# unit is case-insensitive (RFC 9110 §14.1).
_RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$", re.IGNORECASE)
# Past any blob a store can hold; where a longer number is clamped.
POSITION_CAP = 2**63 - 1
# Single flight per cache key: when a release starts, hundreds of devices ask for the same
# delta at once; one computes it, the rest wait and read the cache.
_KEY_LOCKS: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)


def zstd_key(sha256: str) -> str:
    return f"zstd/{sha256}"


def accepts_zstd(accept_encoding: str | None) -> bool:
    """True when ``zstd`` is listed with a non-zero quality (RFC 9110 §12.5.3)."""
    for part in (accept_encoding or "").split(","):
        token, _, params = part.strip().partition(";")
        if token.strip().lower() != "zstd":
            continue
        q = params.strip().lower()
        if q.startswith("q="):
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
        return True
    return False


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive


class UnsatisfiableRange(Exception):
    pass


def byte_position(digits: str) -> int:
    """A Range or Content-Length number, never raising: ``int()`` refuses more than 4,300
    digits, and any number past ``POSITION_CAP`` is beyond every blob, so it is clamped there
    (order is kept: a clamped number is still larger than any length)."""
    significant = digits.lstrip("0")
    if len(significant) > len(str(POSITION_CAP)):
        return POSITION_CAP
    return min(int(significant or "0"), POSITION_CAP)


def parse_range(header: str | None, length: int) -> ByteRange | None:
    """One ``bytes=A-B`` / ``bytes=A-`` / ``bytes=-N`` range, or None to send everything.

    RFC 9110 §14.2: a malformed, multi-range or invalid (B < A) header is ignored; a range
    that starts at or beyond the end, or an empty suffix, raises UnsatisfiableRange (416).
    Numbers of any length are accepted (§14.1.1 sets no limit): a position past the end is
    past the end whatever its digits. A zero-length blob has no range to name: ignored.
    """
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        n = byte_position(last)
        if n == 0:
            raise UnsatisfiableRange
        if length == 0:
            return None
        return ByteRange(max(0, length - n), length - 1)
    start = byte_position(first)
    end = byte_position(last) if last else None
    if end is not None and _less(last, first):
        return None  # invalid: ignored
    if start >= length:
        raise UnsatisfiableRange
    return ByteRange(start, length - 1 if end is None else min(end, length - 1))


def _less(a: str, b: str) -> bool:
    """``int(a) < int(b)`` for digit strings of any length (exact where clamping is not)."""
    a, b = a.lstrip("0"), b.lstrip("0")
    return (len(a), a) < (len(b), b)


def ensure_zstd(storage: Storage, sha256: str) -> int:
    """Cache the zstd copy of a blob; return its size."""
    key = zstd_key(sha256)
    with _KEY_LOCKS[key]:
        return _ensure_zstd(storage, sha256, key)


def _ensure_zstd(storage: Storage, sha256: str, key: str) -> int:
    try:
        return storage.size(key)
    except BlobNotFound:
        pass
    length = storage.size(blob_key(sha256))
    target = storage.local_path(key)
    if target is None:  # an object store: a private temporary directory
        with tempfile.TemporaryDirectory(prefix=ZSTD_SCRATCH_PREFIX) as tmp:
            return _compress_via(storage, sha256, length, key, Path(tmp) / "z")
    # Beside its target, named like every temporary of ours: a process killed mid-copy
    # leaves a ".tmp-" file in the blob store, which the store's sweep removes, never a
    # directory in the system's temp dir that nothing would ever look at.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = temporary_beside(target)
    try:
        return _compress_via(storage, sha256, length, key, tmp_path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _compress_via(storage: Storage, sha256: str, length: int, key: str, out_path: Path) -> int:
    with storage.open(blob_key(sha256)) as src, out_path.open("wb") as out:
        zstd_copy(src, out, length)
    storage.put(key, out_path)
    return out_path.stat().st_size


def ensure_delta(storage: Storage, from_sha: str, to_sha: str) -> int | None:
    """Cache the bsdiff4 patch ``from → to``; return its size, or None when either blob is
    too big for an in-memory diff."""
    key = delta_key(from_sha, to_sha)
    with _KEY_LOCKS[key]:
        return _ensure_delta(storage, from_sha, to_sha, key)


def _ensure_delta(storage: Storage, from_sha: str, to_sha: str, key: str) -> int | None:
    try:
        return storage.size(key)
    except BlobNotFound:
        pass
    if max(storage.size(blob_key(from_sha)), storage.size(blob_key(to_sha))) > DELTA_MAX_BYTES:
        return None
    with _DELTA_SLOT:
        old = storage.get(blob_key(from_sha))
        new = storage.get(blob_key(to_sha))
        patch = bsdiff4.diff(old, new)
        # Guard against a store handing back wrong bytes: a bad patch must never be cached.
        if hashlib.sha256(bsdiff4.patch(old, patch)).hexdigest() != to_sha:
            raise ValueError(f"delta {from_sha[:12]}…→{to_sha[:12]}… does not reproduce its target")
    storage.put_bytes(key, patch)
    return len(patch)
