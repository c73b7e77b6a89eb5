"""The offline pack container (``.mspack``): everything a device needs to install a
channel's models without a network, in one file a technician carries (docs/offline.md).

Layout::

    b"MSPACK\\x00\\x01"        magic and container version 1 (8 bytes)
    u32 big-endian           header length H (at most MAX_HEADER_BYTES)
    H bytes                  header, UTF-8 JSON (below)
    member bodies            concatenated in header order, nothing after the last

The header is a table of contents, not a signed document: every member is trusted only
through the signed chain the device already follows (root walk from its own root, the
offline index by the ``offline`` role, manifests by the index entries' sha256, artifacts by
the manifests' sha256). Tampering with the header therefore moves bytes around but cannot
make a device accept bytes the chain does not vouch for.

    {"format": 1, "fleet": F, "channel": C, "created": T,
     "members": [{"name": "roots/2.root.json", "kind": "root", "length": n,
                  "sha256": h, "encoding": "identity" | "zstd", "stored_length": s}, ...]}

Kinds: ``root`` (root versions, oldest first), ``offline-index`` (exactly one),
``manifest`` and ``artifact`` (content-addressed, named by their sha256). Reads are bounded
everywhere: the header, the member count, each member's declared and decompressed length.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import zstandard

from packager.compression import ZSTD_LEVEL
from packager.errors import PackFormatError

MAGIC = b"MSPACK\x00\x01"
FORMAT = 1
MAX_HEADER_BYTES = 4 << 20
MAX_MEMBERS = 4096
# A member is a root, an index, a manifest (1 MiB cap) or an artifact; artifacts are capped
# by their manifests on the device too, this is the container's own ceiling.
MAX_MEMBER_BYTES = 1 << 30
SUFFIX = ".mspack"

MemberKind = Literal["root", "offline-index", "manifest", "artifact"]
KINDS: tuple[MemberKind, ...] = ("root", "offline-index", "manifest", "artifact")
Encoding = Literal["identity", "zstd"]


@dataclass(frozen=True)
class Member:
    name: str
    kind: MemberKind
    length: int  # decoded bytes
    sha256: str  # of the decoded bytes, as listed (checked on every read)
    encoding: Encoding
    stored_length: int
    offset: int  # of the stored bytes in the file


@dataclass(frozen=True)
class PackHeader:
    fleet: str
    channel: str
    created: str
    members: tuple[Member, ...]
    size: int  # the whole file

    def of_kind(self, kind: MemberKind) -> list[Member]:
        return [m for m in self.members if m.kind == kind]

    def find(self, kind: MemberKind, sha256: str, name: str | None = None) -> Member | None:
        """The member of ``kind`` listed with ``sha256``, else the one called ``name``: the
        header is unsigned, so what a member really holds is checked after reading it."""
        found = next((m for m in self.members if m.kind == kind and m.sha256 == sha256), None)
        if found is None and name is not None:
            found = next((m for m in self.members if m.kind == kind and m.name == name), None)
        return found


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class NewMember:
    name: str
    kind: MemberKind
    data: bytes
    compress: bool = False


def _encode(member: NewMember) -> tuple[Encoding, bytes]:
    if not member.compress:
        return "identity", member.data
    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True, write_content_size=True)
    packed = cctx.compress(member.data)
    # Already-compressed bytes can grow: store whichever is smaller.
    return ("zstd", packed) if len(packed) < len(member.data) else ("identity", member.data)


def write_pack(out: BinaryIO, *, fleet: str, channel: str, created: str, members: Iterable[NewMember]) -> int:
    """Write a pack to ``out``; returns its size in bytes."""
    encoded: list[tuple[NewMember, Encoding, bytes]] = []
    for m in members:
        if m.kind not in KINDS:
            raise ValueError(f"unknown member kind {m.kind!r}")
        encoding, stored = _encode(m)
        encoded.append((m, encoding, stored))
    if len(encoded) > MAX_MEMBERS:
        raise ValueError(f"{len(encoded)} members, more than {MAX_MEMBERS}")
    header = {
        "format": FORMAT,
        "fleet": fleet,
        "channel": channel,
        "created": created,
        "members": [
            {
                "name": m.name,
                "kind": m.kind,
                "length": len(m.data),
                "sha256": hashlib.sha256(m.data).hexdigest(),
                "encoding": encoding,
                "stored_length": len(stored),
            }
            for m, encoding, stored in encoded
        ],
    }
    head = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    if len(head) > MAX_HEADER_BYTES:
        raise ValueError(f"pack header is {len(head)} bytes, more than {MAX_HEADER_BYTES}")
    out.write(MAGIC)
    out.write(struct.pack(">I", len(head)))
    out.write(head)
    size = len(MAGIC) + 4 + len(head)
    for _, _, stored in encoded:
        out.write(stored)
        size += len(stored)
    return size


def pack_bytes(**kwargs: Any) -> bytes:
    buf = io.BytesIO()
    write_pack(buf, **kwargs)
    return buf.getvalue()


# --------------------------------------------------------------------------- reading


def _field(obj: dict[str, Any], key: str, kind: type, what: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise PackFormatError(f"pack header: {what}.{key} is missing or not a {kind.__name__}")
    return value


def parse_header(head: bytes, *, data_offset: int, size: int) -> PackHeader:
    try:
        raw = json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackFormatError(f"pack header is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise PackFormatError("pack header is not a JSON object")
    if raw.get("format") != FORMAT:
        raise PackFormatError(f"pack format {raw.get('format')!r}: this device reads format {FORMAT}")
    listed = raw.get("members")
    if not isinstance(listed, list) or not listed:
        raise PackFormatError("pack header lists no members")
    if len(listed) > MAX_MEMBERS:
        raise PackFormatError(f"pack header lists {len(listed)} members, more than {MAX_MEMBERS}")
    members: list[Member] = []
    offset = data_offset
    for i, item in enumerate(listed):
        what = f"members[{i}]"
        if not isinstance(item, dict):
            raise PackFormatError(f"pack header: {what} is not an object")
        kind = _field(item, "kind", str, what)
        encoding = _field(item, "encoding", str, what)
        length = _field(item, "length", int, what)
        stored = _field(item, "stored_length", int, what)
        sha = _field(item, "sha256", str, what)
        name = _field(item, "name", str, what)
        if kind not in KINDS:
            raise PackFormatError(f"pack header: {what}.kind {kind!r} is not one of {', '.join(KINDS)}")
        if encoding not in ("identity", "zstd"):
            raise PackFormatError(f"pack header: {what}.encoding {encoding!r} is not identity or zstd")
        if not 0 <= length <= MAX_MEMBER_BYTES or not 0 <= stored <= MAX_MEMBER_BYTES:
            raise PackFormatError(f"pack header: {what} declares a length outside 0..{MAX_MEMBER_BYTES}")
        if encoding == "identity" and stored != length:
            raise PackFormatError(f"pack header: {what} is stored as is but its lengths differ")
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise PackFormatError(f"pack header: {what}.sha256 is not 64 lowercase hex digits")
        members.append(Member(name[:256], kind, length, sha, encoding, stored, offset))
        offset += stored
    if offset != size:
        cut = "cut short" if offset > size else "longer than its header says"
        raise PackFormatError(f"pack is {cut}: the header accounts for {offset} bytes, the file has {size}")
    if sum(m.kind == "offline-index" for m in members) != 1:
        raise PackFormatError("pack must hold exactly one offline-index member")
    return PackHeader(
        fleet=str(raw.get("fleet", ""))[:64],
        channel=str(raw.get("channel", ""))[:64],
        created=str(raw.get("created", ""))[:32],
        members=tuple(members),
        size=size,
    )


def decode_member(member: Member, stored: bytes) -> bytes:
    """The member's bytes, decompressed into at most its declared length, with its listed
    sha256 checked (a mismatch is a broken container: the chain's own checks come after)."""
    if len(stored) != member.stored_length:
        raise PackFormatError(f"pack member {member.name}: {len(stored)} of {member.stored_length} bytes")
    if member.encoding == "identity":
        data = stored
    else:
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored))
            data = reader.read(member.length + 1)  # one byte past the declared size is enough
        except zstandard.ZstdError as exc:
            raise PackFormatError(f"pack member {member.name} does not decompress: {exc}") from None
        if len(data) != member.length:
            got = "more" if len(data) > member.length else str(len(data))
            raise PackFormatError(
                f"pack member {member.name} decompresses to {got} bytes, the header says {member.length}"
            )
    if hashlib.sha256(data).hexdigest() != member.sha256:
        raise PackFormatError(f"pack member {member.name} does not match the sha256 its header lists")
    return data


class PackReader:
    """A pack on disk, read member by member (a pack can be larger than a device wants in
    memory at once). Opening checks the container; ``read`` checks a member."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._file: BinaryIO = self.path.open("rb")
            size = self.path.stat().st_size
        except OSError as exc:
            raise PackFormatError(f"cannot read pack {self.path}: {exc.strerror}") from None
        try:
            self.header = _read_header(self._file, size)
        except BaseException:
            self._file.close()
            raise

    def read(self, member: Member) -> bytes:
        self._file.seek(member.offset)
        return decode_member(member, self._file.read(member.stored_length))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PackReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_header(f: BinaryIO, size: int) -> PackHeader:
    start = f.read(len(MAGIC) + 4)
    if len(start) < len(MAGIC) + 4 or start[: len(MAGIC)] != MAGIC:
        if start[:6] == MAGIC[:6]:
            raise PackFormatError(f"pack container version {start[6:8].hex()} is not one this device reads")
        raise PackFormatError("not an offline pack (the file does not start with MSPACK)")
    (length,) = struct.unpack(">I", start[len(MAGIC):])
    if length > MAX_HEADER_BYTES:
        raise PackFormatError(f"pack header declares {length} bytes, more than {MAX_HEADER_BYTES}")
    head = f.read(length)
    if len(head) != length:
        raise PackFormatError(f"pack is cut short inside its header ({len(head)} of {length} bytes)")
    return parse_header(head, data_offset=len(MAGIC) + 4 + length, size=size)


def read_pack_header(path: str | Path) -> PackHeader:
    with PackReader(path) as reader:
        return reader.header


# --------------------------------------------------------------------------- the snapshot


def offline_index_signed(
    *,
    fleet: str,
    channel: str,
    version: int,
    valid_from: str,
    expires: str,
    pack_id: str,
    models: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """The ``signed`` part of a pack's ``offline-index`` (packager.manifest.OfflineIndex)."""
    from packager.manifest import SPEC_VERSION

    return {
        "_type": "offline-index",
        "spec_version": SPEC_VERSION,
        "fleet": fleet,
        "channel": channel,
        "version": version,
        "valid_from": valid_from,
        "expires": expires,
        "pack_id": pack_id,
        "models": models,
    }
