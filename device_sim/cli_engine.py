"""Subcommands for the engine side of device_sim: ``device parity``, ``fleet`` and ``demo``.

device_sim/cli.py calls ``register_device_commands`` with the ``device`` group's
subparsers and ``register_top`` with the top-level ones. Handlers import their modules
lazily so ``modelsync --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packager.errors import UsageError

if TYPE_CHECKING:
    from device_sim.fleet import FleetSpec
    from device_sim.fleet_report import FleetResult


def register_device_commands(device_sub: Any) -> None:
    par = device_sub.add_parser(
        "parity",
        help="run every artifact of a bundle against its scikit-learn reference on fresh telemetry",
    )
    par.add_argument("bundle", type=Path, help="bundle directory (manifest.json + artifacts)")
    par.add_argument("--rows", type=int, default=5000, metavar="N", help="fresh rows (default 5000)")
    par.add_argument("--seed", type=int, help="telemetry seed (default: a new random one, printed)")
    par.add_argument("--root", type=Path, help="root.json: also check the manifest's signature")
    par.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    par.set_defaults(handler=_parity)


def register_top(sub: Any) -> None:
    fleet = sub.add_parser("fleet", help="simulate N devices against a sync service and report convergence")
    fleet.add_argument("--devices", type=int, default=100, metavar="N", help="devices (default 100)")
    fleet.add_argument("--server", required=True, help="service URL, e.g. http://127.0.0.1:8000")
    fleet.add_argument("--enroll-token", help="fleet enrollment token (env MODELSYNC_ENROLL_TOKEN)")
    fleet.add_argument(
        "--root",
        type=Path,
        help="root.json the devices ship with (default: trust the server's root v1 on first use, and say so)",
    )
    fleet.add_argument("--channel", default="stable", help="the channel the devices follow (default: stable)")
    fleet.add_argument("--duration", type=float, default=60.0, metavar="S", help="seconds to run")
    fleet.add_argument("--poll-interval", type=float, default=5.0, metavar="S",
                       help="seconds between a device's syncs (default 5)")
    fleet.add_argument("--out", type=Path, default=Path("fleet-out"), help="report directory")
    fleet.add_argument("--seed", type=int, default=0, help="seeds device ids, jitter and faults (default 0)")
    fleet.add_argument(
        "--networks",
        default="wifi=0.7,cellular=0.2,lossy=0.1",
        help="network mix, NAME=WEIGHT,… (wifi, cellular, lossy)",
    )
    fleet.add_argument(
        "--old-runtime-share",
        type=float,
        default=0.02,
        metavar="F",
        help="share of devices on an onnxruntime older than the artifacts",
    )
    fleet.add_argument(
        "--offline-share",
        type=float,
        default=0.05,
        metavar="F",
        help="share of devices that go offline for a few poll intervals",
    )
    fleet.add_argument("--max-connections", type=int, default=128, help="connections per network profile")
    fleet.add_argument("--state-dir", type=Path, help="keep the devices' state here (default: temporary)")
    fleet.set_defaults(handler=_fleet)

    demo = sub.add_parser("demo", help="end to end: keys, package, serve, publish, release, a fleet, parity")
    demo.add_argument("--workdir", type=Path, default=Path("demo-out"),
                      help="keys, bundles, service data and reports (default demo-out)")
    demo.add_argument("--devices", type=int, default=50, metavar="N", help="simulated devices (default 50)")
    demo.add_argument("--poll-interval", type=float, default=1.0, metavar="S",
                      help="seconds between a device's syncs (default 1)")
    demo.add_argument(
        "--deadline",
        type=float,
        default=None,
        metavar="S",
        help="seconds each rollout stage may take to converge before it is judged (default 180)",
    )
    demo.set_defaults(handler=_demo)


def _weights(text: str) -> dict[str, float]:
    from packager.errors import UsageError

    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        try:
            out[name.strip()] = float(weight)
        except ValueError:
            raise UsageError(f"--networks: {part!r} is not NAME=WEIGHT") from None
    if not out or sum(out.values()) <= 0:
        raise UsageError("--networks needs at least one positive weight")
    return out


def _fleet(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from device_sim.fleet import FleetSpec, default_state_root
    from device_sim.fleet_report import write_report

    token = args.enroll_token or os.environ.get("MODELSYNC_ENROLL_TOKEN")
    if not token:
        raise UsageError("give --enroll-token or set MODELSYNC_ENROLL_TOKEN")
    for name in ("old_runtime_share", "offline_share"):
        if not 0 <= getattr(args, name) <= 1:
            raise UsageError(f"--{name.replace('_', '-')} must be between 0 and 1")
    if args.duration <= 0:
        raise UsageError("--duration must be > 0")
    root = load_root_envelope(args.root, args.server)
    spec = FleetSpec(
        devices=args.devices,
        server=args.server.rstrip("/"),
        enroll_token=token,
        root_envelope=root,
        channel=args.channel,
        poll_interval_s=args.poll_interval,
        seed=args.seed,
        networks=_weights(args.networks),
        old_runtime_share=args.old_runtime_share,
        offline_share=args.offline_share,
        offline_start_within_s=args.duration / 2,
        max_connections=args.max_connections,
        state_dir=args.state_dir,
        state_root=None if args.state_dir else default_state_root(),
    )
    from device_sim.demo import sigterm_as_interrupt

    with sigterm_as_interrupt():
        result = asyncio.run(run_with_progress(spec, args.duration))
    paths = write_report(result, args.out)
    from rich.console import Console
    from rich.markdown import Markdown

    Console().print(Markdown(paths["summary"].read_text()))
    print(f"wrote {paths['json']}, {paths['plot']}, {paths['summary']}")
    return 1 if result.unexpected_errors else 0


def _demo(args: argparse.Namespace) -> int:
    from device_sim.demo import DEFAULT_DEADLINE_S, run_demo

    result = run_demo(
        args.workdir,
        devices=args.devices,
        poll_interval=args.poll_interval,
        deadline=DEFAULT_DEADLINE_S if args.deadline is None else args.deadline,
    )
    return 0 if result.ok else 1


def _parity(args: argparse.Namespace) -> int:
    from rich.console import Console

    from device_sim.parity import print_parity, run_parity

    root = None
    if args.root is not None:
        from packager.keys import load_root

        root = load_root(args.root)
    report = run_parity(args.bundle, rows=args.rows, seed=args.seed, root=root)
    print_parity(report, Console())
    if args.json is not None:
        args.json.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    return 0 if report.passed else 1


def load_root_envelope(path: Path | None, server: str) -> dict[str, Any]:
    """The root the simulated devices ship with: a file, or the server's v1 trusted on first
    use (said out loud: pinning a root is the point of shipping one)."""
    import json
    import sys

    import httpx

    from packager.keys import read_json

    if path is not None:
        loaded = read_json(path)
        if not isinstance(loaded, dict):
            raise UsageError(f"{path}: not a signed root envelope")
        return loaded
    try:
        resp = httpx.get(f"{server.rstrip('/')}/v1/root/1.json", timeout=10.0)
    except httpx.HTTPError as exc:
        raise UsageError(f"cannot reach {server}: {exc}") from None
    if resp.status_code != 200:
        raise UsageError(f"{server}/v1/root/1.json: HTTP {resp.status_code}")
    print(f"note: no --root given; the devices trust root v1 from {server} on first use", file=sys.stderr)
    envelope: dict[str, Any] = json.loads(resp.content)
    return envelope


async def run_with_progress(spec: FleetSpec, seconds: float) -> FleetResult:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from device_sim.fleet import Fleet

    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), transient=False
    ) as progress:
        task = progress.add_task(f"{spec.devices:,} devices", total=seconds)

        def show(t: float, snap: dict[str, int]) -> None:
            parts = ", ".join(f"{k}: {v:,}" for k, v in sorted(snap.items()))
            progress.update(
                task, completed=min(t, seconds), description=f"{spec.devices:,} devices | {parts}"
            )

        fleet = Fleet(spec, on_sample=show)
        return await fleet.run_for(seconds)
