"""`modelsync` console script: a thin shell over the library.

Each package owns its subcommands through a ``register(subparsers)`` function; they are
listed here, in the order ``--help`` shows them, and an import that fails stops the
program at start-up rather than dropping a command. Each handler is ``fn(args) -> int``
and imports heavy modules lazily so ``modelsync --help`` stays fast.

Errors end here, in one line and with the exit code of their class (packager/exit_codes.py,
docs/cli.md): modelsync's own error trees carry an ``exit_code``; an unexpected exception
is a defect of ours, reported by its class (INTERNAL) and shown in full only with
``MODELSYNC_DEBUG=1``. Under ``--json`` an error is a JSON object on stdout as well.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, NoReturn

from device_sim.cli import register as register_device
from packager import cli_bundle, cli_keys, exit_codes
from packager.cli_common import Handler
from packager.errors import ModelSyncError, exit_code_of
from sync_service.cli import register as register_service

__all__ = ["build_parser", "main"]


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors honour ``--json`` (exit code USAGE either way)."""

    def error(self, message: str) -> NoReturn:
        if _JSON_ARGV[0]:
            _print_json_error("usage", f"{self.prog}: {message}", exit_codes.USAGE)
            sys.exit(exit_codes.USAGE)
        super().error(message)


_JSON_ARGV = [False]  # set by main() when its argv holds --json (argv need not be sys.argv)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="modelsync",
        description="Package, sign, serve and sync anomaly-detection models for offline devices.",
        epilog="Exit codes by class of outcome: see docs/cli.md.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    cli_keys.register(sub)  # keys
    cli_bundle.register(sub)  # package, verify, inspect
    register_service(sub)  # serve, admin, publish, release, models, devices
    register_device(sub)  # device, fleet, demo
    from packager.cli_completion import register as register_completion

    register_completion(sub, parser)  # completion
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"modelsync {version('modelsync')}"
    except PackageNotFoundError:
        return "modelsync (not installed)"


def _print_json_error(code: str, message: str, exit_code: int) -> None:
    print(json.dumps({"error": {"code": code, "message": message, "exit_code": exit_code}}, indent=2))


def report_error(args: Any, exc: BaseException, code: str, message: str, exit_code: int) -> int:
    """One line on stderr, and under --json the same as an object on stdout."""
    if getattr(args, "json", False) is True:  # `device parity --json PATH` is a file, not a mode
        _print_json_error(code, message, exit_code)
    print(f"modelsync: error: {message}", file=sys.stderr)
    return exit_code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _JSON_ARGV[0] = "--json" in argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    finally:
        _JSON_ARGV[0] = False
    handler: Handler = args.handler
    try:
        return handler(args)
    except ModelSyncError as exc:
        return report_error(args, exc, exc.code, str(exc), exit_code_of(exc))
    except KeyboardInterrupt:
        print("modelsync: interrupted", file=sys.stderr)
        return exit_codes.INTERRUPTED
    except BrokenPipeError:
        return exit_codes.OK
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        # A path the user gave that a library opened before our checks did.
        what = f"{exc.strerror}: {exc.filename}" if exc.filename else str(exc)
        return report_error(args, exc, "usage", what, exit_codes.USAGE)
    except Exception as exc:
        if os.environ.get("MODELSYNC_DEBUG"):
            raise
        message = f"internal error {type(exc).__name__}: {exc} (MODELSYNC_DEBUG=1 shows the traceback)"
        return report_error(args, exc, "internal", message, exit_codes.INTERNAL)


if __name__ == "__main__":
    sys.exit(main())
