"""Compression bombs in uploads (issue 8, "bounded decompression ... service uploads"): the
service decompresses no request body, so an 8 KiB zstd (or gzip) body that would inflate
to 256 MiB of zeros is refused with a documented 415 ``unsupported_encoding`` before a byte
of it is read (it used to be taken for a tar and refused as ``bad_tar``), nothing is
stored, and the server process's peak memory (VmHWM of a real ``modelsync serve``) stays
within 16 MiB of what a normal upload of a real bundle costs it. So does a 200 MiB JSON
body sent without a token (sync_service/api/body_cap.py)."""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import zstandard
from fastapi.testclient import TestClient

from device_sim.service_process import running_service
from tests.sync_service.bundle_factory import tar_dir

MIB = 1024 * 1024
BOMB_OUTPUT = 256 * MIB
MARGIN = 16 * MIB


def zstd_bomb() -> bytes:
    """A zstd frame of 256 MiB of zeros, streamed out in 1 MiB pieces (RLE blocks)."""
    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=19).stream_writer(out, closefd=False) as w:
        zeros = bytes(MIB)
        for _ in range(BOMB_OUTPUT // MIB):
            w.write(zeros)
    return out.getvalue()


def gzip_bomb() -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as w:
        zeros = bytes(MIB)
        for _ in range(64):  # 64 MiB: gzip's ratio is ~1000:1, the body stays ~64 KiB
            w.write(zeros)
    return out.getvalue()


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # Linux: VmHWM := current RSS


def stored(data_dir: Path) -> set[str]:
    """Blobs and upload directories (not the zstd cache the first upload warms meanwhile)."""
    found = [*(data_dir / "blobs" / "blobs").rglob("*"), *(data_dir / "uploads").rglob("*")]
    return {str(p.relative_to(data_dir)) for p in found}


@pytest.mark.slow
def test_bomb_upload_is_refused_in_bounded_memory(
    tmp_path: Path,
    client: TestClient,
    auth: dict[str, str],
    bundle_factory: Callable[..., Path],
    database_url: str | None,
    server_keys: Path,
) -> None:
    bomb = zstd_bomb()
    assert len(bomb) <= 16 * 1024, len(bomb)
    normal = tar_dir(bundle_factory(version=1, weights=100_000))  # a ~400 KiB artifact
    data_dir = tmp_path / "data"
    env = {"MODELSYNC_DATABASE_URL": database_url} if database_url else {}
    with (
        running_service(data_dir, server_keys / "root.json", server_keys / "index.key", env=env) as svc,
        httpx.Client(base_url=svc.url, headers=auth, timeout=60) as http,
    ):
        tar = {"Content-Type": "application/x-tar"}
        assert http.post("/v1/bundles", content=normal, headers=tar).status_code == 201
        after_normal = peak_rss(svc.pid)
        before = stored(data_dir)

        reset_peak(svc.pid)
        for body, coding in ((bomb, "zstd"), (gzip_bomb(), "gzip"), (bomb, "ZSTD, identity")):
            r = http.post("/v1/bundles", content=body, headers={**tar, "Content-Encoding": coding})
            assert r.status_code == 415, r.text
            assert r.json()["code"] == "unsupported_encoding"
            assert r.headers["accept-encoding"] == "identity"
        # Sent without saying so, the bomb is bytes that are not a tar: 400, not inflated.
        r = http.post("/v1/bundles", content=bomb, headers=tar)
        assert r.status_code == 400 and r.json()["code"] == "bad_tar", r.text
        # 200 MiB of JSON, no token: refused at the body cap, never buffered (api/body_cap.py).
        for declared in (True, False):
            body = b'{"device_id": "' + b"a" * (200 * MIB) + b'"}'
            content = body if declared else iter([body[i : i + MIB] for i in range(0, len(body), MIB)])
            try:
                r = httpx.post(
                    f"{svc.url}/v1/devices/register",
                    content=content,
                    headers={"Content-Type": "application/json"},
                    timeout=60,
                )
                assert r.status_code == 413 and r.json()["code"] == "payload_too_large", r.text
            except (httpx.WriteError, httpx.RemoteProtocolError):
                pass  # the server answered and hung up while the client was still sending
        after_bomb = peak_rss(svc.pid)

        assert stored(data_dir) == before  # nothing half-written, no upload directory left
        again = http.post("/v1/bundles", content=normal, headers=tar)
        assert again.status_code == 200, again.text  # the service is unharmed
    print(f"server VmHWM: normal upload {after_normal / MIB:.1f} MiB, bombs {after_bomb / MIB:.1f} MiB")
    assert after_bomb <= after_normal + MARGIN, (after_normal, after_bomb)


def test_identity_encoding_is_accepted(
    client: TestClient, auth: dict[str, str], bundle_factory: Callable[..., Path]
) -> None:
    body = tar_dir(bundle_factory(version=1))
    for coding in ("identity", " Identity "):
        r = client.post(
            "/v1/bundles",
            content=body,
            headers={**auth, "Content-Type": "application/x-tar", "Content-Encoding": coding},
        )
        assert r.status_code in (200, 201), r.text
