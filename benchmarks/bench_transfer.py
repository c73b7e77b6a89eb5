"""Upload and download through a real `modelsync serve` process: does a big bundle stream
(server memory stays flat), and what do Range, zstd and the zstd cache cost.

Starts ``python -m packager.cli serve`` on a temporary data directory (embedded SQLite,
local blobs), publishes one bundle whose artifact is ``--mib`` MiB (an ONNX model whose
padding initializer is float32 noise rounded to 1/256, so zstd has something to do), then
times: the upload; a full identity download; a resumed download (Range, second half); a
first zstd download (compresses and caches) and a second (cached). Server memory is the
process's peak RSS (VmHWM) read from /proc before and after the upload.

    .venv/bin/python benchmarks/bench_transfer.py --mib 64 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from device_sim.service_process import running_service

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def _artifact(mib: int) -> bytes:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    pad = (np.round(rng.standard_normal(mib * 1024 * 1024 // 4) * 256) / 256).astype(np.float32)
    w = rng.standard_normal((4, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["score"])],
        "bench",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(pad, "pad")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run(mib: int) -> dict[str, Any]:
    from packager.keys import init_keys, load_private_key
    from sync_service.client import ServiceClient
    from tests.sync_service.bundle_factory import manifest_signed, write_bundle

    with tempfile.TemporaryDirectory(prefix="modelsync-bench-") as tmp:
        t = Path(tmp)
        init_keys(t / "keys")
        data = _artifact(mib)
        signed = manifest_signed("bench", 1, {"cpu": data})
        bundle = write_bundle(t / "bundle", signed, [data], [load_private_key(t / "keys" / "publisher.key")])
        sha = signed["artifacts"][0]["sha256"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSYNC_")}
        admin = [sys.executable, "-m", "packager.cli", "admin"]
        subprocess.run(
            [*admin, "migrate", "--data-dir", str(t / "data")], env=env, check=True, capture_output=True
        )
        token = subprocess.run(
            [*admin, "token", "create", "--scope", "publish", "--data-dir", str(t / "data")],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        service_cm = running_service(
            t / "data",
            t / "keys" / "root.json",
            t / "keys" / "index.key",
            extra_args=("--log-level", "WARNING"),
            env=env,
            log_path=t / "serve.log",
        )
        with service_cm as service:
            base = service.url
            rss_before = _peak_rss_mib(service.pid)
            with ServiceClient(base, token, timeout=600) as client:
                upload_s, (status, _) = _timed(lambda: client.publish(bundle))
                assert status == 201
                rss_after = _peak_rss_mib(service.pid)
                url = f"/v1/blobs/{sha}"
                ident = {"Accept-Encoding": "identity"}
                full_s, full = _timed(lambda: client.request("GET", url, headers=ident))
                assert full.content == data
                half = len(data) // 2
                range_s, part = _timed(
                    lambda: client.request("GET", url, headers={**ident, "Range": f"bytes={half}-"})
                )
                assert part.status_code == 206 and part.content == data[half:]
                z = {"Accept-Encoding": "zstd"}
                zfirst_s, zr = _timed(lambda: client.request("GET", url, headers=z))
                zcached_s, _ = _timed(lambda: client.request("GET", url, headers=z))
                zstd_bytes = int(zr.headers["content-length"])
                assert zr.content == data  # httpx decodes zstd
    size = len(data)
    return {
        "artifact_bytes": size,
        "upload_s": round(upload_s, 3),
        "upload_mib_s": round(size / 2**20 / upload_s, 1),
        "server_peak_rss_mib_before_upload": round(rss_before, 1),
        "server_peak_rss_mib_after_upload": round(rss_after, 1),
        "server_peak_rss_growth_mib": round(rss_after - rss_before, 1),
        "download_identity_s": round(full_s, 3),
        "download_identity_mib_s": round(size / 2**20 / full_s, 1),
        "download_range_half_s": round(range_s, 3),
        "download_zstd_first_s": round(zfirst_s, 3),
        "download_zstd_cached_s": round(zcached_s, 3),
        "zstd_bytes": zstd_bytes,
        "zstd_ratio": round(zstd_bytes / size, 3),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=64, help="artifact size in MiB")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    result = run(args.mib)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "transfer.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| measure | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in result.items())]
    (args.out / "transfer.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
