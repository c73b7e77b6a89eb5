"""Arguments and settings shared by the service's subcommands (cli.py, cli_admin.py,
cli_release.py), so none of them imports another."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packager.errors import UsageError

if TYPE_CHECKING:
    from sync_service.core.config import Settings


def add_database_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, help="SQLite database and local blobs (env MODELSYNC_DATA_DIR)"
    )
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db (env MODELSYNC_DATABASE_URL)",
    )


def add_server_args(parser: argparse.ArgumentParser, *, token_help: str) -> None:
    """``--server``, ``--token-file`` and ``--json`` of the commands that call a service."""
    parser.add_argument("--server", help="service URL (env MODELSYNC_SERVER or config file)")
    parser.add_argument("--token-file", type=Path, help=token_help)
    parser.add_argument("--json", action="store_true", help="print the server's answer as JSON")


def settings_from(args: argparse.Namespace, **extra: Any) -> Settings:
    """Environment (MODELSYNC_*) first, then the flags actually given on top."""
    # Imported here: pydantic-settings is not needed for `modelsync --help`.
    from pydantic import ValidationError

    from sync_service.core.config import Settings

    given = {
        "data_dir": getattr(args, "data_dir", None),
        "database_url": getattr(args, "database_url", None),
        **extra,
    }
    try:
        return Settings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise UsageError(f"bad setting {where} (MODELSYNC_{where.upper()}): {err['msg']}") from None


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A titled table on the shared console (which does not cut cells in a pipe)."""
    from rich.table import Table

    from packager.cli_common import console

    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*r)
    console().print(table)


def positive_int(value: str) -> int:
    """argparse type: an integer of 1 or more (a version, a release id, a root version)."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return n
