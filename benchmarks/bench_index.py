"""The hot path: a device's index check (``If-None-Match`` → ``304``) against a real
``modelsync serve`` process, beside a bare FastAPI endpoint served the same way, in the
same run; and the bytes a device downloads for a new model version: full, zstd, delta.

Both servers are one uvicorn process each (``log_config=None, access_log=False``, the
``serve`` command's settings; the service's own JSON access log at ``--log-level``). The
load comes from ``wrk`` (C, one thread, ``--connections`` keep-alive connections) when it
is installed, else from an asyncio/httpx client in this process, which needs far more CPU
per request; on a 2-core machine the client takes one core and the server the other.

Bytes: an IsolationForest (``--trees`` trees) is packaged and published as v1; then a
"republished" model (same hyper-parameters, retrained on fresh telemetry) and a "grown"
one (v1 with ``warm_start`` and 50 more trees) as new versions. For each, the ``cpu``
artifact is fetched in full, with ``Accept-Encoding: zstd``, and as a bsdiff4 delta from
v1's artifact (404 when the delta would not be smaller than the zstd body).

    .venv/bin/python benchmarks/bench_index.py --duration 10 --connections 64 --out benchmarks/results

Through nginx (when Debian's nginx is installed; ``--no-nginx`` skips it): the shipped
deploy/nginx/modelsync.conf over TLS in front of the same service, whose index cache
answers the check, beside the same nginx serving a static file of the index's bytes
(``If-None-Match`` → 304 from nginx's own ETag) on the same certificate and settings.

Targets (issue 3, this 2-core machine): >= 2,000 checks/s, p99 < 50 ms, and >= 40% of the
bare endpoint's throughput; (issue 9) the index through nginx's cache >= 50% of static
nginx. Exit status 1 when one is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response

from device_sim.service_process import free_port, running_service

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BARE_ETAG = '"' + "b" * 64 + '"'
WRK_SCRIPT = """
done = function(summary, latency, requests)
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": %d, "non_2xx_3xx": %d, '
    .. '"p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2, help="alternating index/bare runs; the median is kept")
    p.add_argument("--client", choices=("auto", "wrk", "httpx"), default="auto")
    p.add_argument("--log-level", default="WARNING", help="the service's log level during the load")
    p.add_argument("--trees", type=int, default=100)
    p.add_argument("--rows", type=int, default=4000)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--no-nginx", action="store_true", help="skip the runs through nginx")
    p.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)  # internal: run the bare server
    return p.parse_args(argv)


# --------------------------------------------------------------------------- servers


def serve_bare(port: int) -> None:
    import uvicorn

    app = FastAPI()

    @app.get("/bare")
    async def bare(request: Request) -> Response:
        if request.headers.get("if-none-match") == BARE_ETAG:
            return Response(status_code=304, headers={"ETag": BARE_ETAG})
        return Response(b"{}", media_type="application/json", headers={"ETag": BARE_ETAG})

    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- setup


def prepare(work: Path) -> dict[str, Any]:
    """Keys, a migrated SQLite database with a fleet, a publisher and an enrollment token."""
    from sqlmodel import Session

    from packager.keys import init_keys
    from sync_service import crud
    from sync_service.db import make_engine, migrate

    keys = work / "keys"
    init_keys(keys)
    server_keys = work / "server-keys"
    server_keys.mkdir()
    shutil.copy(keys / "root.json", server_keys / "root.json")
    shutil.copytree(keys / "roots", server_keys / "roots")
    shutil.copy(keys / "index.key", server_keys / "index.key")
    data = work / "data"
    data.mkdir()
    engine = make_engine(f"sqlite:///{data / 'modelsync.db'}")
    migrate(engine)
    with Session(engine) as session:
        fleet = crud.create_fleet(session=session, name="field")
        publisher, _ = crud.create_token(session=session, kind="publisher", scopes=("publish", "release"))
        enroll, _ = crud.create_token(session=session, kind="enrollment", fleet_id=fleet.id)
        session.commit()
    engine.dispose()
    return {"keys": keys, "server_keys": server_keys, "data": data, "publisher": publisher, "enroll": enroll}


def build_bundles(work: Path, keys: Path, trees: int, rows: int, progress: Any) -> dict[str, Path]:
    from packager.detectors import IsolationForestDetector
    from packager.keys import load_private_key, load_root
    from packager.package import build_and_write
    from packager.telemetry import generate_telemetry

    key = load_private_key(keys / "publisher.key")
    root = load_root(keys / "root.json")
    task = progress.add_task("packaging models", total=3)
    base_data = generate_telemetry(rows, seed=1)
    base = IsolationForestDetector(n_estimators=trees, random_state=1).fit(base_data.frame)
    fresh_data = generate_telemetry(rows, seed=2)
    republished = IsolationForestDetector(n_estimators=trees, random_state=1).fit(fresh_data.frame)
    grown = copy.deepcopy(base)
    grown.model_.set_params(warm_start=True, n_estimators=trees + 50)
    grown.model_.fit(base_data.frame.to_numpy())
    out: dict[str, Path] = {}
    for version, (label, model, data) in enumerate(
        [("base", base, base_data), ("republished", republished, fresh_data), ("grown", grown, base_data)],
        start=1,
    ):
        out[label] = build_and_write(
            model,
            name="bench-iforest",
            version=version,
            targets=("cpu",),
            keys=[key],
            root=root,
            out_dir=work / f"bundle-{label}",
            calibration=data.frame.to_numpy(),
        )
        progress.advance(task)
    return out


def cpu_artifact(bundle: Path) -> tuple[str, int]:
    signed = json.loads((bundle / "manifest.json").read_text())["signed"]
    art = next(a for a in signed["artifacts"] if a["target"] == "cpu")
    return art["sha256"], art["length"]


def raw_length(client: httpx.Client, url: str, headers: dict[str, str]) -> tuple[int, int, str]:
    """(status, bytes on the wire, content-encoding), without httpx decoding the body."""
    with client.stream("GET", url, headers=headers) as r:
        size = sum(len(chunk) for chunk in r.iter_raw())
        return r.status_code, size, r.headers.get("content-encoding", "identity")


def measure_bytes(client: httpx.Client, device: dict[str, str], bundles: dict[str, Path]) -> dict[str, Any]:
    old_sha, old_len = cpu_artifact(bundles["base"])
    result: dict[str, Any] = {"base_artifact_bytes": old_len}
    for label in ("republished", "grown"):
        sha, length = cpu_artifact(bundles[label])
        _, full, _ = raw_length(client, f"/v1/blobs/{sha}", {**device, "Accept-Encoding": "identity"})
        zstd = None
        for _ in range(50):  # the zstd copy is made in the background after the publish
            status, size, encoding = raw_length(
                client, f"/v1/blobs/{sha}", {**device, "Accept-Encoding": "zstd"}
            )
            if encoding == "zstd":
                zstd = size
                break
            time.sleep(0.2)
        status, delta, _ = raw_length(client, f"/v1/blobs/{sha}/delta?from={old_sha}", device)
        result[label] = {
            "artifact_bytes": length,
            "full_bytes": full,
            "zstd_bytes": zstd,
            "delta_bytes": delta if status == 200 else None,
            "delta_status": status,
        }
    return result


# --------------------------------------------------------------------------- load


def run_wrk(
    url: str, headers: dict[str, str], connections: int, duration: float, script: Path
) -> dict[str, Any]:
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
    ]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("{"))
    raw = json.loads(line)
    return {
        "requests": raw["requests"],
        "throughput_rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p95_ms": raw["p95_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "errors": raw["errors"] + raw["non_2xx_3xx"],
    }


async def _httpx_load(url: str, headers: dict[str, str], connections: int, duration: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, headers=headers, timeout=5.0) as client:
        end = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < end:
                t = time.perf_counter()
                r = await client.get(url)
                latencies.append(time.perf_counter() - t)
                if r.status_code >= 400:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    import numpy as np

    lat = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "throughput_rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)),
        "max_ms": float(lat.max()),
        "errors": errors,
    }


def load(
    client: str, url: str, headers: dict[str, str], args: argparse.Namespace, script: Path
) -> dict[str, Any]:
    if client == "wrk":
        run_wrk(url, headers, args.connections, args.warmup, script)
        return run_wrk(url, headers, args.connections, args.duration, script)
    asyncio.run(_httpx_load(url, headers, args.connections, args.warmup))
    return asyncio.run(_httpx_load(url, headers, args.connections, args.duration))


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r["throughput_rps"])
    return {**ordered[len(ordered) // 2], "rounds": [round(r["throughput_rps"]) for r in runs]}


# --------------------------------------------------------------------------- nginx

STATIC_SERVER = """
server {{
    listen 127.0.0.1:{port} ssl http2;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:static_tls:10m;
    keepalive_timeout 75s;
    keepalive_requests 10000;
    root {root};
    location = /static.json {{ default_type application/json; }}
}}
server {{
    listen 127.0.0.1:{plain_port};
    keepalive_timeout 75s;
    keepalive_requests 10000;
    root {root};
    location = /static.json {{ default_type application/json; }}
}}
"""


def nginx_runs(
    work: Path, service_url: str, index_body: bytes, device: dict[str, str], etag: str,
    client_kind: str, args: argparse.Namespace, script: Path, progress: Any,
) -> dict[str, Any]:
    """The index check through the shipped nginx site (answered from its cache) and the
    same nginx serving the index's bytes as a static file over TLS and over plain HTTP
    (the service alone is measured over plain HTTP), alternating, all 304s."""
    from tests.deploy.nginx_harness import free_port as nginx_port
    from tests.deploy.nginx_harness import make_tls, running_nginx

    tls = make_tls(work / "tls")
    static = work / "static"
    static.mkdir()
    (static / "static.json").write_bytes(index_body)
    static_port, plain_port = nginx_port(), nginx_port()
    extra = STATIC_SERVER.format(port=static_port, plain_port=plain_port, cert=tls.cert, key=tls.key,
                                 root=static)
    upstream = int(service_url.rsplit(":", 1)[1])
    with running_nginx(work / "nginx", upstream, tls, extra_http=extra) as ngx:
        static_url = f"https://127.0.0.1:{static_port}/static.json"
        plain_url = f"http://127.0.0.1:{plain_port}/static.json"
        index_url = f"{ngx.url}/v1/channels/stable/index"
        with httpx.Client(verify=str(tls.ca), timeout=10) as http:
            static_etag = http.get(static_url).headers["etag"]
            assert http.get(static_url, headers={"If-None-Match": static_etag}).status_code == 304
            deadline = time.monotonic() + 30
            while True:  # the cache answers: a HIT, and 304 for the device's ETag
                r = http.get(index_url, headers={**device, "If-None-Match": etag})
                if r.status_code == 304 and r.headers.get("x-cache-status") == "HIT":
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx never answered the index from its cache: {r.headers}")
        cached, static_runs, plain_runs = [], [], []
        task = progress.add_task("nginx load runs", total=3 * args.rounds)
        for _ in range(args.rounds):
            cached.append(load(client_kind, index_url, {**device, "If-None-Match": etag}, args, script))
            progress.advance(task)
            static_runs.append(load(client_kind, static_url, {"If-None-Match": static_etag}, args, script))
            progress.advance(task)
            plain_runs.append(load(client_kind, plain_url, {"If-None-Match": static_etag}, args, script))
            progress.advance(task)
    via, tls_static, plain = median_run(cached), median_run(static_runs), median_run(plain_runs)
    return {"index_via_nginx": via, "static_nginx": tls_static, "static_nginx_plain_http": plain,
            "ratio_to_static": via["throughput_rps"] / tls_static["throughput_rps"],
            "ratio_to_static_plain_http": via["throughput_rps"] / plain["throughput_rps"]}


# --------------------------------------------------------------------------- report


def write_reports(out: Path, result: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.json").write_text(json.dumps(result, indent=2) + "\n")
    idx, bare = result["index_check"], result["bare_endpoint"]
    lines = [
        "# Index check (If-None-Match → 304) vs a bare FastAPI endpoint",
        "",
        f"Client: {result['client']}, {result['connections']} connections, "
        f"{result['duration_s']:g} s per run, median of {result['rounds']} alternating rounds; "
        f"service log level {result['log_level']}; "
        f"{result['cpus']} CPUs shared by client and servers (and by other work: load average "
        f"{result['load_average_at_end'][0]:.1f} at the end).",
        "",
        "| endpoint | checks/s | p50 ms | p95 ms | p99 ms | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in (("GET /v1/channels/stable/index (304)", idx), ("bare FastAPI (304)", bare)):
        lines.append(
            f"| {name} | {r['throughput_rps']:,.0f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['errors']} |"
        )
    n = result.get("nginx")
    if n is not None:
        for name, r in (
            ("index through nginx's cache, TLS (304)", n["index_via_nginx"]),
            ("static file, same nginx, TLS (304)", n["static_nginx"]),
            ("static file, same nginx, plain HTTP (304)", n["static_nginx_plain_http"]),
        ):
            lines.append(
                f"| {name} | {r['throughput_rps']:,.0f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
                f"{r['p99_ms']:.2f} | {r['errors']} |"
            )
    t = result["targets"]
    lines += [
        "",
        f"Index / bare throughput: **{result['ratio_to_bare']:.0%}**.",
        "",
        *(
            [
                f"Through nginx (deploy/nginx/modelsync.conf): index / static nginx, both TLS: "
                f"**{n['ratio_to_static']:.0%}**; index through nginx (TLS) / static nginx over plain "
                f"HTTP: {n['ratio_to_static_plain_http']:.0%}; the service alone / static nginx over "
                f"plain HTTP, both without TLS: {result['service_to_static_plain_http']:.0%}.",
                "",
            ]
            if n is not None
            else ["Through nginx: not run (nginx not installed or --no-nginx).", ""]
        ),
        "| target | measured | met |",
        "| --- | --- | --- |",
        f"| >= 2,000 checks/s | {idx['throughput_rps']:,.0f} | {t['throughput']} |",
        f"| p99 < 50 ms | {idx['p99_ms']:.2f} ms | {t['p99']} |",
        f"| >= 40% of bare | {result['ratio_to_bare']:.0%} | {t['ratio']} |",
        *(
            [f"| through nginx >= 50% of static nginx | {n['ratio_to_static']:.0%} | {t['nginx_ratio']} |"]
            if n is not None
            else []
        ),
        "",
        "Server-side 304 ratio after the run (modelsync_index_not_modified_ratio): "
        f"{result['server_304_ratio']:.4f}",
        "",
        "## Bytes for a new version (cpu artifact, from v1)",
        "",
        "| new version | artifact | full download | zstd | delta (bsdiff4) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    b = result["bytes"]
    for label, what in (
        ("republished", "republished (retrained, same shape)"),
        ("grown", "grown (+50 trees, warm_start)"),
    ):
        r = b[label]
        delta = f"{r['delta_bytes']:,}" if r["delta_bytes"] is not None else f"none ({r['delta_status']})"
        zstd = f"{r['zstd_bytes']:,}" if r["zstd_bytes"] is not None else "n/a"
        lines.append(f"| {what} | {r['artifact_bytes']:,} | {r['full_bytes']:,} | {zstd} | {delta} |")
    lines.append(f"\nv1 artifact: {b['base_artifact_bytes']:,} bytes ({result['trees']} trees).")
    (out / "index.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(13, 4))
    names = ["index (304)", "bare (304)"]
    values = [idx["throughput_rps"], bare["throughput_rps"]]
    colors = ["tab:blue", "tab:gray"]
    if n is not None:
        names += ["index via\nnginx cache", "static\nnginx TLS", "static\nnginx HTTP"]
        values += [n["index_via_nginx"]["throughput_rps"], n["static_nginx"]["throughput_rps"],
                   n["static_nginx_plain_http"]["throughput_rps"]]
        colors += ["tab:green", "tab:olive", "tab:brown"]
    ax1.bar(names, values, color=colors)
    ax1.axhline(2000, color="tab:red", linestyle="--", label="target 2,000/s")
    ax1.set_ylabel("checks per second")
    ax1.legend()
    ax1.set_title("throughput")
    width = 0.35
    xs = range(3)
    ax2.bar([x - width / 2 for x in xs], [idx["p50_ms"], idx["p95_ms"], idx["p99_ms"]], width, label="index")
    ax2.bar(
        [x + width / 2 for x in xs],
        [bare["p50_ms"], bare["p95_ms"], bare["p99_ms"]],
        width,
        label="bare",
        color="tab:gray",
    )
    ax2.set_xticks(list(xs), ["p50", "p95", "p99"])
    ax2.set_ylabel("ms")
    ax2.legend()
    ax2.set_title("latency")
    labels = ["republished", "grown"]
    for i, key in enumerate(("full_bytes", "zstd_bytes", "delta_bytes")):
        ax3.bar(
            [x + (i - 1) * 0.27 for x in range(2)],
            [(b[label][key] or 0) / 1024 for label in labels],
            0.27,
            label=key.removesuffix("_bytes"),
        )
    ax3.set_xticks(range(2), labels)
    ax3.set_ylabel("KiB on the wire")
    ax3.legend()
    ax3.set_title("bytes for a new version")
    fig.tight_layout()
    fig.savefig(out / "index.png", dpi=120)


def server_304_ratio(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("modelsync_index_not_modified_ratio "):
            return float(line.split()[1])
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_bare is not None:
        serve_bare(args.serve_bare)
        return 0
    from rich.progress import Progress

    client_kind = args.client
    if client_kind == "auto":
        client_kind = "wrk" if shutil.which("wrk") else "httpx"
    procs: list[subprocess.Popen[bytes]] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-index-") as tmp,
        Progress() as progress,
        contextlib.ExitStack() as stack,
    ):
        work = Path(tmp)
        setup = prepare(work)
        bundles = build_bundles(work, setup["keys"], args.trees, args.rows, progress)
        bare_port = free_port()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        service = stack.enter_context(
            running_service(
                setup["data"],
                setup["server_keys"] / "root.json",
                setup["server_keys"] / "index.key",
                extra_args=("--log-level", args.log_level),
                env=env,
                log_path=work / "service.log",
            )
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "--serve-bare", str(bare_port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        )
        try:
            base = service.url
            bare_url = f"http://127.0.0.1:{bare_port}/bare"
            wait_up(bare_url, procs[0])
            publisher = {"Authorization": f"Bearer {setup['publisher']}"}
            with httpx.Client(base_url=base, timeout=60) as http:
                for label in ("base", "republished", "grown"):
                    from sync_service.client import ServiceClient

                    with ServiceClient(base, setup["publisher"]) as api:
                        api.publish(bundles[label])
                r = http.post(
                    "/v1/releases",
                    headers=publisher,
                    json={
                        "fleet": "field",
                        "channel": "stable",
                        "model": "bench-iforest",
                        "version": 1,
                        "percent": 100,
                    },
                )
                r.raise_for_status()
                for version in (2, 3):  # released (halted at once) so the device may fetch them
                    rel = http.post(
                        "/v1/releases",
                        headers=publisher,
                        json={
                            "fleet": "field",
                            "channel": "stable",
                            "model": "bench-iforest",
                            "version": version,
                            "percent": 0,
                        },
                    )
                    rel.raise_for_status()
                token = http.post(
                    "/v1/devices/register",
                    headers={"Authorization": f"Bearer {setup['enroll']}"},
                    json={"device_id": "bench-device", "platform": "linux"},
                ).json()["device_token"]
                device = {"Authorization": f"Bearer {token}"}
                first = http.get("/v1/channels/stable/index", headers=device)
                first.raise_for_status()
                etag = first.headers["etag"]
                check = http.get("/v1/channels/stable/index", headers={**device, "If-None-Match": etag})
                assert check.status_code == 304, check.status_code
                task = progress.add_task("measuring bytes", total=None)
                bytes_result = measure_bytes(http, device, bundles)
                progress.remove_task(task)

                script = work / "report.lua"
                script.write_text(WRK_SCRIPT)
                index_runs, bare_runs = [], []
                task = progress.add_task("load runs", total=2 * args.rounds)
                for _ in range(args.rounds):
                    index_runs.append(
                        load(
                            client_kind,
                            f"{base}/v1/channels/stable/index",
                            {**device, "If-None-Match": etag},
                            args,
                            script,
                        )
                    )
                    progress.advance(task)
                    bare_runs.append(load(client_kind, bare_url, {"If-None-Match": BARE_ETAG}, args, script))
                    progress.advance(task)
                nginx = None
                if not args.no_nginx and shutil.which("nginx"):
                    nginx = nginx_runs(work, base, first.content, device, etag, client_kind, args,
                                       script, progress)
                ratio_304 = server_304_ratio(http)
        finally:
            for proc in procs:
                stop(proc)
    index_check, bare = median_run(index_runs), median_run(bare_runs)
    ratio = index_check["throughput_rps"] / bare["throughput_rps"]
    targets = {
        "throughput": index_check["throughput_rps"] >= 2000,
        "p99": index_check["p99_ms"] < 50,
        "ratio": ratio >= 0.40,
    }
    if nginx is not None:
        targets["nginx_ratio"] = nginx["ratio_to_static"] >= 0.50
    result = {
        "client": client_kind,
        "connections": args.connections,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "log_level": args.log_level,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_at_end": os.getloadavg(),
        "trees": args.trees,
        "index_check": index_check,
        "bare_endpoint": bare,
        "ratio_to_bare": ratio,
        "nginx": nginx,
        "service_to_static_plain_http": (
            index_check["throughput_rps"] / nginx["static_nginx_plain_http"]["throughput_rps"]
            if nginx else None
        ),
        "server_304_ratio": ratio_304,
        "targets": targets,
        "bytes": bytes_result,
    }
    write_reports(args.out, result)
    print((args.out / "index.md").read_text())
    return 0 if all(targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
