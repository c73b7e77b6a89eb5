"""Fleet scale: N simulated devices (default 5,000) against one local `modelsync serve`
(its own process, SQLite, local blobs) converge on a release.

    .venv/bin/python benchmarks/bench_fleet.py --devices 5000 --poll-interval 30 \
        --out benchmarks/results/fleet

Steps: keys; two small IsolationForest bundles (25 trees, so 5,000 devices' state fits in
tmpfs); serve; fleet + tokens; publish both; release v1 to 100%; start the fleet; once
(almost) every eligible device runs v1, release v2 at 10% then 100%; stop when every
eligible device runs v2 or the time is up. Writes the fleet report (JSON, PNG, markdown)
plus ``bench.json`` with the phase timings, and prints them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from device_sim.demo import MODEL, ServiceHandle, demo_service, sigterm_as_interrupt
from device_sim.fleet import Fleet, FleetSpec, default_state_root
from device_sim.fleet_report import write_report

TREES = 25
ROWS = 2000


def make_bundles(workdir: Path, keys: Path) -> list[Path]:
    from packager.detectors import IsolationForestDetector
    from packager.keys import load_private_key, load_root
    from packager.package import build_and_write
    from packager.telemetry import generate_telemetry

    root = load_root(keys / "root.json")
    key = load_private_key(keys / "publisher.key")
    out = []
    for version in (1, 2):
        data = generate_telemetry(ROWS, seed=version)
        model = IsolationForestDetector(n_estimators=TREES, random_state=version).fit(data.frame)
        out.append(
            build_and_write(
                model,
                name=MODEL,
                version=version,
                targets=("android-nnapi", "ios-coreml", "cpu"),
                keys=[key],
                root=root,
                out_dir=workdir / f"bundle-v{version}",
                calibration=data.frame.to_numpy(),
            )
        )
    return out


async def scenario(
    svc: ServiceHandle, args: argparse.Namespace, console: Console
) -> tuple[Fleet, dict[str, float]]:
    spec = FleetSpec(
        devices=args.devices,
        server=svc.url,
        enroll_token=svc.enroll_token,
        root_envelope=svc.root_envelope(),
        poll_interval_s=args.poll_interval,
        seed=1,
        offline_start_within_s=2 * args.poll_interval,
        state_root=default_state_root(),
        max_connections=args.max_connections,
    )
    fleet = Fleet(spec)
    marks: dict[str, float] = {}
    poll = args.poll_interval

    def line(what: str) -> None:
        marks[what] = round(fleet.now(), 1)
        console.print(f"[{fleet.now():7.1f} s] {what}: {fleet.snapshot()}")

    await fleet.start()
    try:
        await fleet.wait(lambda: fleet.share_on(MODEL, 1) >= args.settle, args.phase_polls * poll)
        line("v1 settled")
        rel = await asyncio.to_thread(svc.release, MODEL, 2, 10)
        expected = fleet.expected_share(MODEL, 2, 10, rel["salt"])
        line("v2 released to 10%")
        # lossy links lag by design: move on once 95% of the bucket has it
        await fleet.wait(lambda: fleet.share_on(MODEL, 2) >= 0.95 * expected, args.phase_polls * poll)
        line("v2 on its 10% bucket")
        await asyncio.to_thread(svc.set_percent, MODEL, 2, 100)
        line("v2 raised to 100%")
        start = fleet.now()
        for share in (0.5, 0.95, 0.99, 1.0):

            def reached(need: float = share) -> bool:
                return fleet.share_on(MODEL, 2) >= need

            await fleet.wait(reached, start + args.phase_polls * poll - fleet.now())
            line(f"v2 on {share:.0%} of eligible")
        await asyncio.sleep(poll)
    finally:
        await fleet.stop()
    return fleet, marks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=5000)
    parser.add_argument("--poll-interval", type=float, default=30.0)
    parser.add_argument("--phase-polls", type=float, default=5.0, help="give each phase this many polls")
    parser.add_argument("--settle", type=float, default=0.95, help="share of eligible devices on v1 first")
    parser.add_argument("--max-connections", type=int, default=128, help="per network profile")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fleet"))
    args = parser.parse_args(argv)
    console = Console()
    with tempfile.TemporaryDirectory(prefix="modelsync-bench-fleet-") as tmp:
        work = Path(tmp)
        from packager.keys import init_keys

        init_keys(work / "keys")
        bundles = make_bundles(work, work / "keys")
        with sigterm_as_interrupt(), demo_service(work, work / "keys") as svc:
            svc.setup_fleet()
            for b in bundles:
                svc.publish(b)
            svc.release(MODEL, 1, 100)
            started = time.monotonic()
            fleet, marks = asyncio.run(scenario(svc, args, console))
            status = svc.status(MODEL, 2)
        wall = time.monotonic() - started
    paths = write_report(fleet.result, args.out)
    bench = {
        "devices": args.devices,
        "poll_interval_s": args.poll_interval,
        "wall_s": round(wall, 1),
        "marks_s": marks,
        "converged": fleet.result.converged,
        "unexpected_errors": fleet.result.unexpected_errors,
        "failures_by_reason": fleet.result.failures_by_reason,
        "bytes_by_kind": fleet.result.bytes_by_kind,
        "syncs": fleet.result.syncs,
        "sync_p50_ms": round(fleet.result.sync_p50_ms, 1),
        "sync_p95_ms": round(fleet.result.sync_p95_ms, 1),
        "service_devices_by_version": status.get("devices_by_version"),
        "command": "benchmarks/bench_fleet.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    (args.out / "bench.json").write_text(json.dumps(bench, indent=2) + "\n")
    console.print_json(json.dumps(bench))
    console.print(f"report: {paths['summary']}  plot: {paths['plot']}")
    return 0 if not fleet.result.unexpected_errors else 1


if __name__ == "__main__":
    sys.exit(main())
