"""``modelsync admin``: run beside the service with the same settings (flags or MODELSYNC_*
environment). Schema migrations, fleets, channels and API tokens. Tokens are printed once
and stored only as SHA-256 hashes."""

from __future__ import annotations

import argparse
from typing import Any

from packager.errors import UsageError
from sync_service.cli_common import add_database_args, settings_from


def register_admin(sub: Any) -> None:
    admin = sub.add_parser("admin", help="migrate the database; manage fleets, channels, tokens")
    asub = admin.add_subparsers(dest="admin_command", metavar="ACTION", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = asub.add_parser(name, help=help_text)
        add_database_args(p)
        return p

    migrate = add("migrate", "create or upgrade the database schema (Alembic)")
    migrate.set_defaults(handler=_migrate)

    fleet = add("fleet", "fleets of devices")
    fleet.add_argument("action", choices=("create", "list"))
    fleet.add_argument("name", nargs="?")
    fleet.set_defaults(handler=_fleet)

    channel = add("channel", "release channels of a fleet (each fleet starts with `stable`)")
    channel.add_argument("action", choices=("create", "list"))
    channel.add_argument("name", nargs="?")
    channel.add_argument("--fleet", help="fleet name (required for create)")
    channel.set_defaults(handler=_channel)

    token = add("token", "API tokens: publisher (with scopes) and fleet enrollment")
    token.add_argument("action", choices=("create", "list", "revoke"))
    token.add_argument("token_id", nargs="?", type=int, help="revoke: the token's id (see `token list`)")
    token.add_argument("--scope", help="publisher scopes, comma-separated: publish,release,admin")
    token.add_argument("--fleet", help="with --enroll: the fleet devices enrol into")
    token.add_argument("--enroll", action="store_true", help="make a fleet enrollment token")
    token.add_argument("--name", default="", help="a label to recognise the token by")
    token.add_argument("--all", action="store_true", help="list: include revoked tokens")
    token.set_defaults(handler=_token)


def _engine(args: argparse.Namespace, *, check: bool = True) -> Any:
    from sync_service.db import ensure_migrated, make_engine

    settings = settings_from(args)
    engine = make_engine(settings.resolved_database_url, pool_max=settings.database_pool_max)
    if check:
        ensure_migrated(
            engine,
            url=settings.resolved_database_url,
            data_dir=settings.data_dir if settings.database_url is None else None,
        )
    return engine


def _migrate(args: argparse.Namespace) -> int:
    from sync_service.db import migrate, safe_url

    settings = settings_from(args)
    engine = _engine(args, check=False)
    try:
        before, after = migrate(engine)
    finally:
        engine.dispose()
    where = safe_url(settings.resolved_database_url)
    if before == after:
        print(f"{where} is up to date (revision {after})")
    else:
        print(f"migrated {where}: {before or 'empty'} → {after}")
    return 0


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*r)
    Console().print(table)


def _fleet(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import IntegrityError
    from sqlmodel import Session

    from sync_service import crud

    engine = _engine(args)
    try:
        with Session(engine) as session:
            if args.action == "list":
                rows = [
                    [f.name, f.created_at.isoformat(timespec="seconds")]
                    for f in crud.list_fleets(session=session)
                ]
                _table("fleets", ["name", "created"], rows)
                return 0
            if not args.name:
                raise UsageError("fleet create needs a NAME")
            if not crud.valid_name(args.name):
                raise UsageError(f"bad fleet name {args.name!r}: lower-case letters, digits, . _ - (max 64)")
            if crud.get_fleet(session=session, name=args.name) is not None:
                raise UsageError(f"fleet {args.name!r} already exists")
            try:
                crud.create_fleet(session=session, name=args.name)
                session.commit()
            except IntegrityError:
                raise UsageError(f"fleet {args.name!r} already exists") from None
            print(f"created fleet {args.name} with channel {crud.DEFAULT_CHANNEL}")
            return 0
    finally:
        engine.dispose()


def _channel(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import IntegrityError
    from sqlmodel import Session

    from sync_service import crud

    engine = _engine(args)
    try:
        with Session(engine) as session:
            fleet = None
            if args.fleet:
                fleet = crud.get_fleet(session=session, name=args.fleet)
                if fleet is None:
                    raise UsageError(f"no fleet {args.fleet!r} (see `modelsync admin fleet list`)")
            if args.action == "list":
                names = {f.id: f.name for f in crud.list_fleets(session=session)}
                channels = crud.list_channels(session=session, fleet_id=fleet.id if fleet else None)
                _table("channels", ["fleet", "channel"], [[names[c.fleet_id], c.name] for c in channels])
                return 0
            if fleet is None or fleet.id is None or not args.name:
                raise UsageError("channel create needs --fleet FLEET and a NAME")
            if not crud.valid_name(args.name):
                raise UsageError(
                    f"bad channel name {args.name!r}: lower-case letters, digits, . _ - (max 64)"
                )
            try:
                crud.create_channel(session=session, fleet_id=fleet.id, name=args.name)
                session.commit()
            except IntegrityError:
                raise UsageError(f"fleet {args.fleet!r} already has a channel {args.name!r}") from None
            print(f"created channel {args.name} in fleet {args.fleet}")
            return 0
    finally:
        engine.dispose()


def _token(args: argparse.Namespace) -> int:
    from sqlmodel import Session

    from sync_service import crud
    from sync_service.auth import parse_scopes

    engine = _engine(args)
    try:
        with Session(engine) as session:
            if args.action == "list":
                fleets = {f.id: f.name for f in crud.list_fleets(session=session)}
                rows = [
                    [
                        str(t.id),
                        t.kind,
                        t.scopes or "-",
                        fleets.get(t.fleet_id, "-") if t.fleet_id else "-",
                        t.name,
                        t.created_at.isoformat(timespec="seconds"),
                        t.revoked_at.isoformat(timespec="seconds") if t.revoked_at else "",
                    ]
                    for t in crud.list_tokens(session=session, include_revoked=args.all)
                ]
                _table("tokens", ["id", "kind", "scopes", "fleet", "name", "created", "revoked"], rows)
                return 0
            if args.action == "revoke":
                if args.token_id is None:
                    raise UsageError("token revoke needs the token's id (see `modelsync admin token list`)")
                row = crud.revoke_token(session=session, token_id=args.token_id)
                if row is None:
                    raise UsageError(f"no token with id {args.token_id}")
                session.commit()
                print(f"revoked token {args.token_id} ({row.kind} {row.name})".rstrip())
                return 0
            if args.enroll:
                if args.scope:
                    raise UsageError("--enroll tokens carry no scopes: drop --scope")
                if not args.fleet:
                    raise UsageError("--enroll needs --fleet FLEET")
                fleet = crud.get_fleet(session=session, name=args.fleet)
                if fleet is None:
                    raise UsageError(
                        f"no fleet {args.fleet!r} (create it: modelsync admin fleet create NAME)"
                    )
                plain, row = crud.create_token(
                    session=session, kind="enrollment", fleet_id=fleet.id, name=args.name
                )
            else:
                if args.fleet:
                    raise UsageError("--fleet applies to enrollment tokens: add --enroll")
                try:
                    scopes = parse_scopes(args.scope or "")
                except ValueError as exc:
                    raise UsageError(f"--scope: {exc}") from None
                plain, row = crud.create_token(
                    session=session, kind="publisher", scopes=scopes, name=args.name
                )
            session.commit()
            print(plain)
            import sys

            print(
                f"token id {row.id} ({row.kind}{', ' + row.scopes if row.scopes else ''}): "
                "shown once, store it now; only its hash is kept",
                file=sys.stderr,
            )
            return 0
    finally:
        engine.dispose()
