"""`modelsync keys init | rotate | renew | show`: the release engineer's signing keys and root.json."""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path
from typing import Any

from packager.cli_common import add_json_arg, passphrase_from, print_json
from packager.errors import UsageError


def register(sub: Any) -> None:
    keys = sub.add_parser("keys", help="create and rotate signing keys and root.json")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    init = ksub.add_parser("init", help="generate root, publisher and index keys and root.json v1")
    init.add_argument("directory", type=Path, help="the key directory to create")
    for role in ("root", "publisher", "index", "offline"):
        init.add_argument(f"--{role}-keys", type=int, default=1, metavar="N", help=f"number of {role} keys")
        init.add_argument(f"--{role}-threshold", type=int, default=1, metavar="T",
                          help=f"signatures of {role} keys required (default 1)")
    init.add_argument("--passphrase-env", metavar="VAR", help="encrypt private keys with $VAR")
    init.add_argument("--force", action="store_true", help="overwrite an existing key directory")
    _lifetime_arg(init)
    add_json_arg(init)
    init.set_defaults(handler=_keys_init)

    rot = ksub.add_parser("rotate", help="write root v(N+1) replacing or revoking keys of a role")
    rot.add_argument("directory", type=Path, help="the key directory (`keys init` wrote it)")
    rot.add_argument("--role", choices=["root", "publisher", "index", "offline"], required=True,
                     help="the role whose keys change")
    rot.add_argument(
        "--revoke", action="append", default=[], metavar="KEYID", help="key id (prefix) to remove"
    )
    rot.add_argument("--add", type=int, default=1, metavar="N", help="new keys to generate (default 1)")
    rot.add_argument("--threshold", type=int, help="new threshold for the role")
    rot.add_argument("--passphrase-env", metavar="VAR", help="the private keys' passphrase is in $VAR")
    _lifetime_arg(rot)
    add_json_arg(rot)
    rot.set_defaults(handler=_keys_rotate)

    renew = ksub.add_parser(
        "renew", help="write root v(N+1): same keys, a new expiry (the yearly renewal, docs/operations.md)"
    )
    renew.add_argument("directory", type=Path, help="the key directory (`keys init` wrote it)")
    renew.add_argument("--passphrase-env", metavar="VAR", help="the private keys' passphrase is in $VAR")
    _lifetime_arg(renew)
    add_json_arg(renew)
    renew.set_defaults(handler=_keys_renew)

    show = ksub.add_parser("show", help="print root.json's roles and key ids")
    show.add_argument("directory", type=Path, help="the key directory (`keys init` wrote it)")
    add_json_arg(show)
    show.set_defaults(handler=_keys_show)


def _lifetime_arg(parser: Any) -> None:
    parser.add_argument(
        "--lifetime-days", type=int, default=365, metavar="DAYS",
        help="the new root expires this many days from now (default 365)",
    )


def _lifetime(args: argparse.Namespace) -> timedelta:
    if args.lifetime_days < 1:
        raise UsageError("--lifetime-days must be at least 1")
    return timedelta(days=args.lifetime_days)


def _root_json(path: Path) -> dict[str, Any]:
    """What --json prints for a key directory's root.json: version, expiry, roles."""
    from packager.keys import expires_soon, load_root

    root = load_root(path, check_expired=False)
    return {
        "root": str(path),
        "version": root.version,
        "expires": root.expires,
        "expires_soon": expires_soon(root.expires),
        "roles": {
            role: {"threshold": spec.threshold, "keyids": list(spec.keyids)}
            for role, spec in root.roles.items()
        },
    }


def _print_expiry(path: Path) -> None:
    from packager.keys import describe_expiry, expires_soon, load_root

    root = load_root(path, check_expired=False)
    print(f"root v{root.version} expires {describe_expiry(root.expires)}")
    if expires_soon(root.expires):
        print("warning: renew it before then: modelsync keys renew (docs/operations.md, \"Yearly renewal\")")


def _keys_init(args: argparse.Namespace) -> int:
    from packager.keys import RoleSpec, init_keys

    specs = {
        role: RoleSpec(getattr(args, f"{role}_keys"), getattr(args, f"{role}_threshold"))
        for role in ("root", "publisher", "index", "offline")
    }
    path = init_keys(args.directory, specs, passphrase_from(args), force=args.force, lifetime=_lifetime(args))
    if args.json:
        print_json(_root_json(path))
        return 0
    print(f"wrote keys and {path}")
    _print_expiry(path)
    print("keep root*.key and publisher*.key offline; the service needs only index.key and root.json")
    return 0


def _keys_rotate(args: argparse.Namespace) -> int:
    from packager.keys import rotate

    if args.add < 0:
        raise UsageError("--add must be >= 0")
    path = rotate(
        args.directory, args.role, args.revoke, args.add, args.threshold, passphrase_from(args),
        lifetime=_lifetime(args),
    )
    if args.json:
        print_json(_root_json(path))
        return 0
    print(f"wrote {path}")
    _print_expiry(path)
    return 0


def _keys_renew(args: argparse.Namespace) -> int:
    from packager.keys import renew

    path = renew(args.directory, passphrase_from(args), lifetime=_lifetime(args))
    if args.json:
        print_json(_root_json(path))
        return 0
    print(f"wrote {path}")
    _print_expiry(path)
    print("copy roots/, then root.json, to every server: devices pick the new root up on their next sync")
    return 0


def _keys_show(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from packager.keys import load_root

    if args.json:
        print_json(_root_json(args.directory / "root.json"))
        return 0
    root = load_root(args.directory / "root.json", check_expired=False)
    table = Table(title=f"root v{root.version}")
    table.add_column("role")
    table.add_column("threshold")
    table.add_column("key ids")
    for role, spec in root.roles.items():
        table.add_row(role, str(spec.threshold), "\n".join(spec.keyids))
    Console().print(table)
    _print_expiry(args.directory / "root.json")
    return 0
