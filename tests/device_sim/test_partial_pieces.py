"""A cut download loses little (docs/device.md 4.1, "Transport failures"): the bytes of each network
read reach the partial file at once, and a zstd body's whole blocks are decoded into it as
they arrive. The retry within the sync resumes there. Before, reads were gathered into
64 KiB chunks, so a cut lost up to 64 KiB and a zstd body under 64 KiB left nothing."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import zstandard

from device_sim.device import Device
from device_sim.transfer import SyncConfig
from tests.device_sim.forge import doc_bytes, entry, index_doc, manifest_doc, ort_model, sha
from tests.device_sim.repo import Repo


class _CutAfter(httpx.AsyncByteStream):
    """The body in 4 KiB network reads, the connection lost after ``keep`` bytes."""

    def __init__(self, body: bytes, keep: int) -> None:
        self.body, self.keep = body, keep

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(0, self.keep, 4096):
            yield self.body[i : min(i + 4096, self.keep)]
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


@pytest.mark.parametrize("encoding", ["identity", "zstd"])
def test_a_cut_keeps_what_arrived_and_the_retry_resumes_from_it(tmp_path: Path, encoding: str) -> None:
    rng = random.Random(1)
    data = bytes(rng.choice(b"aaaaaaab") for _ in range(400_000))  # zstd: ~56 KiB on the wire
    repo = Repo(deltas=False, zstd=encoding == "zstd")
    mbytes = doc_bytes(manifest_doc(repo.keys, "m", 1, {"cpu": data}, golden_from=ort_model(1.0)))
    repo.add_blob(mbytes)
    repo.add_blob(data)
    repo.set_index(index_doc(repo.keys, [entry("m", 1, mbytes)], version=1, fleet=repo.fleet))
    wire = zstandard.ZstdCompressor(level=3).compress(data) if encoding == "zstd" else data
    assert encoding == "identity" or len(wire) < 64 << 10
    keep = len(wire) * 3 // 4
    serve = repo.handle
    cut = {"left": 1}

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == f"/v1/blobs/{sha(data)}" and cut["left"]:
            cut["left"] -= 1
            repo.requests.append(request)
            headers = {"Content-Length": str(len(wire))}
            if encoding == "zstd":
                headers["Content-Encoding"] = "zstd"
            return httpx.Response(200, stream=_CutAfter(wire, keep), headers=headers)
        return serve(request)

    repo.handle = handle  # type: ignore[method-assign]
    device = Device.register(tmp_path / "d", server="http://repo.test", enroll_token="mse_good",
                             platform="linux", root_envelope=json.loads(repo.roots[1]), device_id="dev-1",
                             transport=repo.transport(), config=SyncConfig(deadline=30))
    result = device.sync()
    gets = [r for r in repo.requests if r.url.path == f"/v1/blobs/{sha(data)}"]
    assert len(gets) == 2  # cut, then resumed within the same sync
    resumed_at = int(gets[1].headers["range"].removeprefix("bytes=").rstrip("-"))
    if encoding == "identity":
        assert resumed_at == keep  # every byte received was kept
    else:
        assert resumed_at >= 128 << 10  # the whole zstd blocks received were decoded and kept
    # the bytes arrived whole (the artifact is no model: it fails to load, after check 4.2)
    assert result.outcomes[0].reason == "artifact_load"
