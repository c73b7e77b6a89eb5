"""HTTP for the device: capped reads, and resumable, decompressing artifact downloads.

Nothing here decides whether a document or artifact may be trusted (``device_sim.trust``
does); this module only makes sure no answer can be longer than the caller allows, that a
cut download resumes where it stopped, and that a zstd stream is capped as it expands
(check 4.1). The TypeScript client's ``transfer.ts`` is the same layer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, NoReturn, cast

import httpx
import zstandard

from device_sim import trust
from device_sim.errors import DownloadError, LengthMismatchError
from packager.manifest import Artifact

DISCARD_BYTES = 64 << 10  # an error or 304 body read to its end so the connection is reused
# A zstd frame can expand 4 bytes into 128 KiB: the decompressor writes pieces of at most
# ZSTD_PIECE, each checked against the declared length (check 4.1) before the next is made.
ZSTD_PIECE = 16 << 10
# The largest window a transfer may ask for (zstd's recommended decoder limit; level 19,
# the highest a packager would use, needs 8 MiB): the decoder's buffer is bounded too.
ZSTD_MAX_WINDOW = 8 << 20

Progress = Callable[[str, int, int], None]  # (what, bytes so far, bytes in all)
# How a model's bytes came, as the "installed" report's data.transfer says.
TransferKind = Literal["delta", "zstd", "full", "resumed", "held"]  # held: a shadow candidate's files


@dataclass(frozen=True)
class SyncConfig:
    connect_timeout: float = 10.0
    read_timeout: float = 20.0  # per read: a silent server
    deadline: float = 300.0  # per sync: a trickling server
    chunk_size: int = 64 * 1024


@dataclass
class Transfer:
    """How one model's bytes came and every byte read off the wire for it, manifest included."""

    kind: TransferKind = "full"
    wire: int = 0


def make_client(server: str, config: SyncConfig, transport: httpx.AsyncBaseTransport | None = None,
                ) -> httpx.AsyncClient:
    timeout = httpx.Timeout(config.read_timeout, connect=config.connect_timeout)
    # Redirects (presigned S3 URLs) are followed; httpx drops Authorization across origins.
    return httpx.AsyncClient(base_url=server, transport=transport, timeout=timeout,
                             follow_redirects=True, headers={"User-Agent": "modelsync-device"})


def detail(resp: httpx.Response) -> str:
    """``": <detail>"`` from a read JSON error body, or nothing."""
    try:
        body = resp.json()
        if isinstance(body, dict) and "detail" in body:
            return f": {body['detail']}"
    except (ValueError, httpx.ResponseNotRead):
        pass
    return ""


class Http:
    """One device's view of the server: its client, its token, its read sizes."""

    def __init__(self, client: httpx.AsyncClient, config: SyncConfig, token: str) -> None:
        self.client = client
        self.config = config
        self.auth = {"Authorization": f"Bearer {token}"}

    async def get(self, url: str, *, auth: bool = True, headers: dict[str, str] | None = None,
                  params: dict[str, str] | None = None) -> httpx.Response:
        """A streamed GET; the caller reads it with ``read``, ``discard`` or ``refuse``."""
        req = self.client.build_request("GET", url, headers=headers if headers is not None
                                        else (self.auth if auth else {}), params=params)
        try:
            try:
                return await self.client.send(req, stream=True)
            except httpx.RemoteProtocolError:
                # A pooled keep-alive connection the server closed just as we reused it
                # ("Server disconnected without sending a response"): a GET is idempotent, so
                # one retry on a fresh connection, as browsers do, rather than a failed sync.
                return await self.client.send(req, stream=True)
        except httpx.HTTPError as exc:
            raise DownloadError(f"GET {url}: {type(exc).__name__}: {exc}") from None

    async def post_json(self, url: str, body: Any, what: str) -> None:
        """POST with the device's token; anything but 200 is a DownloadError."""
        try:
            resp = await self.client.post(url, json=body, headers=self.auth)
        except httpx.HTTPError as exc:
            raise DownloadError(f"{what}: {type(exc).__name__}") from None
        if resp.status_code != 200:
            raise DownloadError(f"{what}: HTTP {resp.status_code}{detail(resp)}", status=resp.status_code)

    async def refuse(self, resp: httpx.Response, what: str) -> NoReturn:
        """Raise DownloadError for an unexpected status, with the server's one-line detail."""
        body = await self.read(resp, 4096, what, strict=False)
        try:
            found = json.loads(body).get("detail")
        except (ValueError, AttributeError):
            found = None
        raise DownloadError(f"{what}: HTTP {resp.status_code}" + (f": {found}" if found else ""))

    async def discard(self, resp: httpx.Response) -> None:
        """Read a small answer to its end before closing: closing an unread streamed response
        drops its keep-alive connection, so every 304 poll would open a new one."""
        await self.read(resp, DISCARD_BYTES, "response", strict=False)

    async def read(self, resp: httpx.Response, cap: int, what: str, strict: bool = True) -> bytes:
        """The body, at most ``cap`` bytes (``strict``: more is an error; else truncated at cap)."""
        buf = bytearray()
        try:
            async for chunk in resp.aiter_bytes(self.config.chunk_size):
                buf += chunk
                if len(buf) > cap:
                    if strict:
                        raise LengthMismatchError(f"{what} is longer than {cap} bytes")
                    del buf[cap:]
                    break
        except httpx.HTTPError as exc:
            raise DownloadError(f"{what}: {type(exc).__name__}: {exc}") from None
        finally:
            await resp.aclose()
        return bytes(buf)

    async def download_to_part(self, artifact: Artifact, part: Path, transfer: Transfer,
                               progress: Progress | None = None) -> bool:
        """Full, zstd or Range-resumed download into ``part``, length-capped all the way
        (check 4.1). False: the server will not resume, start again from 0."""
        offset = part.stat().st_size if part.exists() else 0
        if offset >= artifact.length:
            return True
        headers = dict(self.auth)
        if offset:
            headers |= {"Range": f"bytes={offset}-", "Accept-Encoding": "identity"}
        else:
            headers["Accept-Encoding"] = "zstd"
        url = f"/v1/blobs/{artifact.sha256}"
        try:
            async with self.client.stream("GET", url, headers=headers) as resp:
                if resp.status_code == 416 or (offset and resp.status_code == 200):
                    part.unlink(missing_ok=True)  # the server will not resume: start over
                    if resp.status_code == 416:
                        return False
                    offset = 0
                elif offset and resp.status_code == 206:
                    got = resp.headers.get("content-range", "")
                    if got.removeprefix("bytes ").split("-")[0] != str(offset):
                        raise DownloadError(f"asked for bytes {offset}-, got Content-Range {got!r}")
                    transfer.kind = "resumed"
                elif resp.status_code != 200:
                    raise DownloadError(f"artifact {artifact.sha256[:12]}…: HTTP {resp.status_code}")
                encoding = resp.headers.get("content-encoding", "identity").lower()
                if encoding not in ("identity", "zstd"):
                    raise DownloadError(f"artifact sent with unasked-for Content-Encoding {encoding}")
                if encoding == "zstd":
                    transfer.kind = "zstd"
                await self._stream_to(part, resp, offset, artifact, zstd=encoding == "zstd",
                                      transfer=transfer, progress=progress)
        except httpx.HTTPError as exc:
            raise DownloadError(f"artifact {artifact.sha256[:12]}…: {type(exc).__name__}: {exc}") from None
        return True

    async def _stream_to(self, part: Path, resp: httpx.Response, offset: int, artifact: Artifact, *,
                         zstd: bool, transfer: Transfer, progress: Progress | None) -> None:
        declared = artifact.length
        # Compressed bytes are capped too: endless empty zstd frames produce no output.
        wire_cap = declared + declared // 16 + 4096
        wire = 0
        with open(part, "r+b" if offset else "wb") as fh:
            fh.seek(offset)
            sink = _CappedSink(fh, part, offset, declared)
            # The decompressor hands the sink at most ZSTD_PIECE bytes per write and the
            # sink refuses the one that passes the declared length, so a bomb stops with
            # one piece in memory (check 4.1); a frame that asks for a window beyond
            # ZSTD_MAX_WINDOW is refused before the decoder allocates it.
            writer = (zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
                      .stream_writer(cast("IO[bytes]", sink), write_size=ZSTD_PIECE, closefd=False)
                      if zstd else None)  # the writer calls write() alone
            # aiter_raw() without a size: each piece as it arrives, written and flushed at
            # once, so a cut loses only what the network had not yet delivered.
            async for chunk in resp.aiter_raw():
                wire += len(chunk)
                transfer.wire += len(chunk)
                if writer is None:
                    sink.write(chunk)
                else:
                    if wire > wire_cap:
                        sink.discard()
                        raise LengthMismatchError("compressed artifact is longer than any encoding "
                                                  f"of {declared} bytes")
                    try:
                        writer.write(chunk)
                    except zstandard.ZstdError as exc:
                        raise DownloadError(f"corrupt zstd stream: {exc}", damaged=True) from None
                fh.flush()
                if progress is not None:
                    progress(f"artifact {artifact.sha256[:12]}", sink.size, declared)


class _CappedSink:
    """The partial file as a zstd stream_writer's target: each piece is counted before it
    is written and the first one past the declared length discards the file (check 4.1)."""

    def __init__(self, fh: BinaryIO, part: Path, size: int, declared: int) -> None:
        self.fh, self.part, self.size, self.declared = fh, part, size, declared

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self.declared:  # endless data stops here, before the write
            self.discard()
            trust.check_length_so_far(self.size, self.declared)
        self.fh.write(data)
        return len(data)

    def discard(self) -> None:
        self.fh.close()
        self.part.unlink(missing_ok=True)
