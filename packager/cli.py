"""`modelsync` console script: a thin shell over the library.

Each package owns its subcommands through a ``register(subparsers)`` function in its own
``cli.py``; each handler is ``fn(args) -> int`` and imports heavy modules lazily so
``modelsync --help`` stays fast. Errors from modelsync's tree are printed in one line here,
never as tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

from packager.errors import ModelSyncError, UsageError

Handler = Callable[[argparse.Namespace], int]
GROUPS = ("packager.cli_commands", "sync_service.cli", "device_sim.cli")


def passphrase_from(args: argparse.Namespace) -> bytes | None:
    var = getattr(args, "passphrase_env", None) or "MODELSYNC_KEY_PASSPHRASE"
    value = os.environ.get(var)
    if getattr(args, "passphrase_env", None) and value is None:
        raise UsageError(f"environment variable {var} is not set")
    return value.encode() if value else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelsync",
        description="Package, sign, serve and sync anomaly-detection models for offline devices.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in GROUPS:
        module = importlib.import_module(name)
        module.register(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"modelsync {version('modelsync')}"
    except PackageNotFoundError:
        return "modelsync (not installed)"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ModelSyncError as exc:
        print(f"modelsync: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("modelsync: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def existing_dir(value: str) -> Path:
    p = Path(value)
    if not p.is_dir():
        raise argparse.ArgumentTypeError(f"not a directory: {value}")
    return p


if __name__ == "__main__":
    sys.exit(main())
