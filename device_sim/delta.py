"""bsdiff4 patches applied with every block's size capped, so a hostile delta cannot
expand past the artifact the manifest declares (check 4.1)."""

from __future__ import annotations

import bz2

import bsdiff4.core

from device_sim import errors


def _bunzip(data: bytes, cap: int, what: str) -> bytes:
    dec = bz2.BZ2Decompressor()
    out = dec.decompress(data, max_length=cap + 1)
    if len(out) > cap:
        raise ValueError(f"delta {what} block expands past {cap} bytes")
    if not dec.eof:
        raise ValueError(f"delta {what} block is truncated")
    return out


def apply_delta(old: bytes, patch: bytes, length: int) -> bytes:
    """A BSDIFF4 patch applied with every block's size capped (check 4.1): the declared
    output must be the manifest's length, and no bz2 block may expand past it."""
    if len(patch) < 32 or patch[:8] != b"BSDIFF40":
        raise ValueError("not a BSDIFF4 patch")
    len_ctrl, len_diff, len_dst = (bsdiff4.core.decode_int64(patch[i : i + 8]) for i in (8, 16, 24))
    if len_dst != length:
        raise errors.LengthMismatchError(f"delta would produce {len_dst} bytes, the manifest says {length}")
    if len_ctrl < 0 or len_diff < 0 or 32 + len_ctrl + len_diff > len(patch):
        raise ValueError("delta header is inconsistent")
    ctrl = _bunzip(patch[32 : 32 + len_ctrl], 24 * (length + 2), "control")
    diff = _bunzip(patch[32 + len_ctrl : 32 + len_ctrl + len_diff], length, "diff")
    extra = _bunzip(patch[32 + len_ctrl + len_diff :], length, "extra")
    if len(ctrl) % 24:
        raise ValueError("delta control block is malformed")
    return bytes(bsdiff4.core.patch(old, len_dst, ctrl, diff, extra))
