"""Subcommands for the engine side of device_sim: ``device parity``, ``fleet`` and ``demo``.

device_sim/cli.py calls ``register_device_commands`` with the ``device`` group's
subparsers and ``register_top`` with the top-level ones. Handlers import their modules
lazily so ``modelsync --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


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
    return None


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
