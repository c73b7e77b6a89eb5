"""What every subcommand module shares: the handler type and the key passphrase argument.

Apart from packager.cli so that the subcommand modules it registers never import it back.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from packager.errors import UsageError

Handler = Callable[[argparse.Namespace], int]


def passphrase_from(args: argparse.Namespace) -> bytes | None:
    var = getattr(args, "passphrase_env", None) or "MODELSYNC_KEY_PASSPHRASE"
    value = os.environ.get(var)
    if getattr(args, "passphrase_env", None) and value is None:
        raise UsageError(f"environment variable {var} is not set")
    return value.encode() if value else None


# Rich wraps to 80 columns when stdout is not a terminal, which cut table cells (ids,
# hashes) in pipes and files: output that is not a terminal gets room for any row.
PIPE_WIDTH = 10_000


def console(*, stderr: bool = False) -> Any:
    """A rich Console for a command's output: the terminal's width, or unbounded in a pipe."""
    from rich.console import Console

    out = Console(stderr=stderr)
    if not out.is_terminal:
        out = Console(stderr=stderr, width=PIPE_WIDTH)
    return out


def print_json(value: Any) -> None:
    """A command's data under --json: one JSON document on stdout."""
    import json

    print(json.dumps(value, indent=2, default=str))


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result (or the error) as JSON")
