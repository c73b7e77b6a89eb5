"""`modelsync` console script: a thin shell over the library.

Each package owns its subcommands through a ``register(subparsers)`` function; they are
listed here, in the order ``--help`` shows them, and an import that fails stops the
program at start-up rather than dropping a command. Each handler is ``fn(args) -> int``
and imports heavy modules lazily so ``modelsync --help`` stays fast. Errors from
modelsync's tree are printed in one line here, never as tracebacks.
"""

from __future__ import annotations

import argparse
import sys

from device_sim.cli import register as register_device
from packager import cli_bundle, cli_keys
from packager.cli_common import Handler
from packager.errors import ModelSyncError
from sync_service.cli import register as register_service

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelsync",
        description="Package, sign, serve and sync anomaly-detection models for offline devices.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    cli_keys.register(sub)  # keys
    cli_bundle.register(sub)  # package, verify, inspect
    register_service(sub)  # serve, admin, publish, release
    register_device(sub)  # device, fleet, demo
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


if __name__ == "__main__":
    sys.exit(main())
