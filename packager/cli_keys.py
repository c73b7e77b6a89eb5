"""`modelsync keys init | rotate | show`: the release engineer's signing keys and root.json."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from packager.cli_common import passphrase_from
from packager.errors import UsageError


def register(sub: Any) -> None:
    keys = sub.add_parser("keys", help="create and rotate signing keys and root.json")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    init = ksub.add_parser("init", help="generate root, publisher and index keys and root.json v1")
    init.add_argument("directory", type=Path, help="the key directory to create")
    for role in ("root", "publisher", "index"):
        init.add_argument(f"--{role}-keys", type=int, default=1, metavar="N", help=f"number of {role} keys")
        init.add_argument(f"--{role}-threshold", type=int, default=1, metavar="T",
                          help=f"signatures of {role} keys required (default 1)")
    init.add_argument("--passphrase-env", metavar="VAR", help="encrypt private keys with $VAR")
    init.add_argument("--force", action="store_true", help="overwrite an existing key directory")
    init.set_defaults(handler=_keys_init)

    rot = ksub.add_parser("rotate", help="write root v(N+1) replacing or revoking keys of a role")
    rot.add_argument("directory", type=Path, help="the key directory (`keys init` wrote it)")
    rot.add_argument("--role", choices=["root", "publisher", "index"], required=True,
                     help="the role whose keys change")
    rot.add_argument(
        "--revoke", action="append", default=[], metavar="KEYID", help="key id (prefix) to remove"
    )
    rot.add_argument("--add", type=int, default=1, metavar="N", help="new keys to generate (default 1)")
    rot.add_argument("--threshold", type=int, help="new threshold for the role")
    rot.add_argument("--passphrase-env", metavar="VAR", help="the keys' passphrase is in $VAR")
    rot.set_defaults(handler=_keys_rotate)

    show = ksub.add_parser("show", help="print root.json's roles and key ids")
    show.add_argument("directory", type=Path, help="the key directory (`keys init` wrote it)")
    show.set_defaults(handler=_keys_show)


def _keys_init(args: argparse.Namespace) -> int:
    from packager.keys import RoleSpec, init_keys

    specs = {
        role: RoleSpec(getattr(args, f"{role}_keys"), getattr(args, f"{role}_threshold"))
        for role in ("root", "publisher", "index")
    }
    path = init_keys(args.directory, specs, passphrase_from(args), force=args.force)
    print(f"wrote keys and {path}")
    print("keep root*.key and publisher*.key offline; the service needs only index.key and root.json")
    return 0


def _keys_rotate(args: argparse.Namespace) -> int:
    from packager.keys import rotate

    if args.add < 0:
        raise UsageError("--add must be >= 0")
    path = rotate(args.directory, args.role, args.revoke, args.add, args.threshold, passphrase_from(args))
    print(f"wrote {path}")
    return 0


def _keys_show(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from packager.keys import load_root

    root = load_root(args.directory / "root.json", check_expired=False)
    table = Table(title=f"root v{root.version} (expires {root.expires})")
    table.add_column("role")
    table.add_column("threshold")
    table.add_column("key ids")
    for role, spec in root.roles.items():
        table.add_row(role, str(spec.threshold), "\n".join(spec.keyids))
    Console().print(table)
    return 0
