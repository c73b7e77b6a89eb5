"""Pure pieces of sync_service.transfer: Range parsing and Accept-Encoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync_service.transfer import ByteRange, UnsatisfiableRange, accepts_zstd, parse_range


@given(length=st.integers(1, 10_000), start=st.integers(0, 20_000), span=st.integers(0, 20_000))
def test_closed_ranges(length: int, start: int, span: int) -> None:
    end = start + span
    if start >= length:
        with pytest.raises(UnsatisfiableRange):
            parse_range(f"bytes={start}-{end}", length)
        return
    r = parse_range(f"bytes={start}-{end}", length)
    assert r == ByteRange(start, min(end, length - 1))


@given(length=st.integers(1, 10_000), n=st.integers(1, 20_000))
def test_suffix_ranges(length: int, n: int) -> None:
    assert parse_range(f"bytes=-{n}", length) == ByteRange(max(0, length - n), length - 1)


@pytest.mark.parametrize(
    "header", [None, "", "bytes=", "bytes=-", "items=0-1", "bytes=5-2", "bytes=0-1,3-4", "x"]
)
def test_ignored_headers(header: str | None) -> None:
    assert parse_range(header, 100) is None


def test_empty_suffix_is_unsatisfiable() -> None:
    with pytest.raises(UnsatisfiableRange):
        parse_range("bytes=-0", 100)


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("zstd", True),
        ("gzip, deflate, br, zstd", True),
        ("ZSTD;q=0.5", True),
        ("zstd;q=0", False),
        ("zstd;q=bad", False),
        ("gzip", False),
        (None, False),
        ("zstdx", False),
    ],
)
def test_accepts_zstd(header: str | None, ok: bool) -> None:
    assert accepts_zstd(header) is ok


@pytest.mark.parametrize(
    ("header", "want"),
    [
        ("bytes=" + "9" * 5000 + "-", UnsatisfiableRange),
        ("bytes=-" + "9" * 5000, ByteRange(0, 99)),
        ("bytes=0-" + "9" * 5000, ByteRange(0, 99)),
        ("bytes=" + "0" * 5000 + "7-" + "0" * 5000 + "9", ByteRange(7, 9)),
        ("bytes=" + "9" * 5000 + "-" + "9" * 4999, None),  # last < first: ignored
        ("BYTES=1-2", ByteRange(1, 2)),
        ("bytes=\u0661-\u0662", None),  # Arabic-Indic digits are not DIGIT
    ],
)
def test_numbers_of_any_length(header: str, want: object) -> None:
    if want is UnsatisfiableRange:
        with pytest.raises(UnsatisfiableRange):
            parse_range(header, 100)
    else:
        assert parse_range(header, 100) == want


def test_zero_length_blob_has_no_range() -> None:
    assert parse_range("bytes=-5", 0) is None
    with pytest.raises(UnsatisfiableRange):
        parse_range("bytes=0-", 0)
