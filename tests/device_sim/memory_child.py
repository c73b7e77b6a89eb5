"""One device sync in a process of its own, printing its peak RSS: the child of
test_memory.py. ``normal``: a fresh device installs a model. ``bomb``: the index names an
artifact of BOMB_DECLARED bytes and the server answers it with ``Content-Encoding: zstd``
and an 8 KiB body of RLE blocks that inflates to 256 MiB.

    python -m tests.device_sim.memory_child normal|bomb STATE_DIR
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

import httpx

from device_sim.device import Device
from device_sim.transfer import SyncConfig
from tests.device_sim.forge import doc_bytes, entry, index_doc, manifest_doc, ort_model, sha
from tests.device_sim.repo import Repo

BOMB_DECLARED = 515 << 10  # the normal artifact: 515 KiB
RLE_BLOCK = 128 << 10  # zstd's largest block: 4 bytes on the wire
BOMB_BLOCKS = 2048  # 8 KiB of blocks, 256 MiB of zeros


def rle_bomb(blocks: int = BOMB_BLOCKS) -> bytes:
    """A zstd frame of ``blocks`` RLE blocks of 128 KiB zeros: no content size declared,
    a 128 KiB window (descriptor 0x38), every block 3 header bytes and 1 byte to repeat."""
    out = bytearray(b"\x28\xb5\x2f\xfd\x00\x38")
    for i in range(blocks):
        last = int(i == blocks - 1)
        out += ((RLE_BLOCK << 3) | (1 << 1) | last).to_bytes(3, "little") + b"\x00"
    return bytes(out)


def main(mode: str, state: Path) -> None:
    repo = Repo(deltas=False)
    model = ort_model(1.0)
    if mode == "normal":
        repo.publish("m", 1, model, index_version=1)
    else:
        declared = bytes(BOMB_DECLARED)
        mbytes = doc_bytes(manifest_doc(repo.keys, "m", 1, {"cpu": declared}, golden_from=model))
        repo.add_blob(mbytes)
        repo.set_index(index_doc(repo.keys, [entry("m", 1, mbytes)], version=1, fleet=repo.fleet))
        serve = repo.handle
        bomb = rle_bomb()

        def handle(request: httpx.Request) -> httpx.Response:
            if request.url.path == f"/v1/blobs/{sha(declared)}":
                repo.requests.append(request)
                return httpx.Response(200, stream=httpx.ByteStream(bomb), headers={
                    "Content-Encoding": "zstd", "Content-Length": str(len(bomb))})
            return serve(request)

        repo.handle = handle  # type: ignore[method-assign]
    device = Device.register(state, server="http://repo.test", enroll_token="mse_good", platform="linux",
                             root_envelope=json.loads(repo.roots[1]), device_id="dev-mem",
                             transport=repo.transport(), config=SyncConfig(deadline=60.0))
    result = device.sync()
    print(json.dumps({
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "installed": [o.version for o in result.installed],
        "reasons": [o.reason for o in result.outcomes],
        "models": device.store.installed_versions(),
        "partials": sorted(p.name for p in (state / "cache").glob("*.part")),
    }))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
