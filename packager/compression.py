"""The one zstd setting shared by the packager (the manifest's `compressed` figures) and the
sync service (what it serves for ``Accept-Encoding: zstd``): same level, same frame options,
same streaming call, so the size and sha256 in the manifest match the bytes on the wire."""

from __future__ import annotations

from typing import BinaryIO

import zstandard

# Level 6: on float-heavy model files within ~1% of level 10's size in half the time
# (64 MiB took 8.8 s at level 10 on a 2-core machine: benchmarks/bench_transfer.py).
ZSTD_LEVEL = 6


def zstd_copy(src: BinaryIO, dst: BinaryIO, size: int) -> None:
    """Write one zstd frame of ``src`` to ``dst``. The frame records the content size and a
    checksum: simple decoders (the TypeScript client's) need the size."""
    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True, write_content_size=True)
    cctx.copy_stream(src, dst, size=size)
