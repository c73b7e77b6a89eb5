"""``modelsync admin``: schema migrations, fleets, channels and API tokens.

Two ways in, the same answers: beside the service with its database settings (flags or
MODELSYNC_* environment), or over HTTP with ``--server URL`` and a publisher token holding
scope ``admin`` (the /v1/admin routes). ``migrate`` needs the database. Tokens are printed
once and stored only as SHA-256 hashes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from packager.cli_common import add_json_arg, print_json
from packager.errors import ConflictError, NotFoundError, UsageError
from sync_service.cli_common import add_database_args, print_table, settings_from

if TYPE_CHECKING:
    from sync_service.auth import TokenKind


def register_admin(sub: Any) -> None:
    admin = sub.add_parser("admin", help="migrate the database; manage fleets, channels, tokens")
    asub = admin.add_subparsers(dest="admin_command", metavar="ACTION", required=True)

    def add(name: str, help_text: str, *, http: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = asub.add_parser(name, help=help_text)
        add_database_args(p)
        if http:
            p.add_argument("--server", metavar="URL",
                           help="work over HTTP against this service instead of its database")
            p.add_argument("--token-file", type=Path,
                           help="with --server: file holding a publisher token with scope admin "
                           "(default: $MODELSYNC_TOKEN or the config file)")
        add_json_arg(p)
        return p

    migrate = add("migrate", "create or upgrade the database schema (Alembic)", http=False)
    migrate.set_defaults(handler=_migrate)

    fleet = add("fleet", "fleets of devices")
    fleet.add_argument("action", choices=("create", "list"), help="create a fleet, or list them")
    fleet.add_argument("name", nargs="?", help="create: the new fleet's name")
    fleet.set_defaults(handler=_fleet)

    channel = add("channel", "release channels of a fleet (each fleet starts with `stable`)")
    channel.add_argument("action", choices=("create", "list"), help="create a channel, or list them")
    channel.add_argument("name", nargs="?", help="create: the new channel's name")
    channel.add_argument("--fleet", help="fleet name (required for create)")
    channel.set_defaults(handler=_channel)

    token = add("token", "API tokens: publisher (with scopes) and fleet enrollment")
    token.add_argument("action", choices=("create", "list", "revoke"), help="what to do with tokens")
    token.add_argument("token_id", nargs="?", type=int, help="revoke: the token's id (see `token list`)")
    token.add_argument("--scope", help="publisher scopes, comma-separated: read,publish,release,admin")
    token.add_argument("--fleet", help="with --enroll: the fleet devices enrol into")
    token.add_argument("--enroll", action="store_true", help="make a fleet enrollment token")
    token.add_argument("--name", default="", help="a label to recognise the token by")
    token.add_argument("--all", action="store_true", help="list: include revoked tokens")
    token.set_defaults(handler=_token)


# --------------------------------------------------------------------------- backends


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


class _Http:
    """The /v1/admin routes: the same answers as _Db's."""

    def __init__(self, args: argparse.Namespace) -> None:
        from sync_service.client import ServiceClient, resolve_server, resolve_token

        self.api = ServiceClient(resolve_server(args.server), resolve_token(args.token_file))

    def close(self) -> None:
        self.api.__exit__()

    def fleets(self) -> list[dict[str, Any]]:
        return list(self.api.json("GET", "/v1/admin/fleets"))

    def create_fleet(self, name: str) -> dict[str, Any]:
        return dict(self.api.json("POST", "/v1/admin/fleets", json={"name": name}))

    def create_channel(self, fleet: str, name: str) -> dict[str, Any]:
        return dict(self.api.json("POST", f"/v1/admin/fleets/{fleet}/channels", json={"name": name}))

    def tokens(self, include_revoked: bool) -> list[dict[str, Any]]:
        return list(self.api.json("GET", "/v1/admin/tokens", params={"include_revoked": include_revoked}))

    def create_token(self, kind: str, scopes: list[str], fleet: str | None, name: str) -> dict[str, Any]:
        body = {"kind": kind, "scopes": scopes, "fleet": fleet, "name": name}
        return dict(self.api.json("POST", "/v1/admin/tokens", json=body))

    def revoke_token(self, token_id: int) -> dict[str, Any]:
        return dict(self.api.json("POST", f"/v1/admin/tokens/{token_id}/revoke"))


class _Db:
    """The database directly, beside the service."""

    def __init__(self, args: argparse.Namespace) -> None:
        from sqlmodel import Session

        self.engine = _engine(args)
        self.session = Session(self.engine)

    def close(self) -> None:
        self.session.close()
        self.engine.dispose()

    def _fleet(self, name: str) -> Any:
        from sync_service import crud

        fleet = crud.get_fleet(session=self.session, name=name)
        if fleet is None or fleet.id is None:
            raise NotFoundError(f"no fleet {name!r} (create it: modelsync admin fleet create NAME)")
        return fleet

    def _fleet_public(self, fleet: Any) -> dict[str, Any]:
        from packager.manifest import format_time
        from sync_service import crud

        channels = [c.name for c in crud.list_channels(session=self.session, fleet_id=fleet.id)]
        return {"name": fleet.name, "channels": channels, "created": format_time(fleet.created_at)}

    def fleets(self) -> list[dict[str, Any]]:
        from sync_service import crud

        return [self._fleet_public(f) for f in crud.list_fleets(session=self.session)]

    def create_fleet(self, name: str) -> dict[str, Any]:
        from sqlalchemy.exc import IntegrityError

        from sync_service import crud

        if not crud.valid_name(name):
            raise UsageError(f"bad fleet name {name!r}: lower-case letters, digits, . _ - (max 64)")
        if crud.get_fleet(session=self.session, name=name) is not None:
            raise ConflictError(f"fleet {name!r} already exists")
        try:
            fleet = crud.create_fleet(session=self.session, name=name)
            self.session.commit()
        except IntegrityError:
            raise ConflictError(f"fleet {name!r} already exists") from None
        return self._fleet_public(fleet)

    def create_channel(self, fleet_name: str, name: str) -> dict[str, Any]:
        from sqlalchemy.exc import IntegrityError

        from sync_service import crud

        fleet = self._fleet(fleet_name)
        if not crud.valid_name(name):
            raise UsageError(f"bad channel name {name!r}: lower-case letters, digits, . _ - (max 64)")
        try:
            crud.create_channel(session=self.session, fleet_id=fleet.id, name=name)
            self.session.commit()
        except IntegrityError:
            raise ConflictError(f"fleet {fleet_name!r} already has a channel {name!r}") from None
        return self._fleet_public(fleet)

    def _token_public(self, t: Any) -> dict[str, Any]:
        from packager.manifest import format_time
        from sync_service import crud

        fleet = crud.get_fleet_by_id(session=self.session, fleet_id=t.fleet_id) if t.fleet_id else None
        return {
            "id": t.id, "kind": t.kind, "scopes": [s for s in t.scopes.split(",") if s],
            "fleet": fleet.name if fleet else None, "name": t.name, "created": format_time(t.created_at),
            "revoked": format_time(t.revoked_at) if t.revoked_at else None,
        }

    def tokens(self, include_revoked: bool) -> list[dict[str, Any]]:
        from sync_service import crud

        rows = crud.list_tokens(session=self.session, include_revoked=include_revoked)
        return [self._token_public(t) for t in rows]

    def create_token(self, kind: str, scopes: list[str], fleet: str | None, name: str) -> dict[str, Any]:
        from sync_service import crud

        fleet_id = self._fleet(fleet).id if fleet else None
        plain, row = crud.create_token(
            session=self.session, kind=cast("TokenKind", kind), scopes=scopes, fleet_id=fleet_id, name=name
        )
        self.session.commit()
        return {"token": plain, **self._token_public(row)}

    def revoke_token(self, token_id: int) -> dict[str, Any]:
        from sync_service import crud

        existing = crud.get_token_by_id(session=self.session, token_id=token_id)
        if existing is None or existing.kind == "device":
            raise NotFoundError(f"no token with id {token_id} (see `modelsync admin token list`)")
        row = crud.revoke_token(session=self.session, token_id=token_id)
        self.session.commit()
        return self._token_public(row)


def _backend(args: argparse.Namespace) -> Any:
    return _Http(args) if args.server else _Db(args)


# --------------------------------------------------------------------------- commands


def _migrate(args: argparse.Namespace) -> int:
    from sync_service.db import migrate, safe_url

    settings = settings_from(args)
    engine = _engine(args, check=False)
    try:
        before, after = migrate(engine)
    finally:
        engine.dispose()
    where = safe_url(settings.resolved_database_url)
    if args.json:
        print_json({"database": where, "before": before, "after": after})
    elif before == after:
        print(f"{where} is up to date (revision {after})")
    else:
        print(f"migrated {where}: {before or 'empty'} → {after}")
    return 0


def _fleet(args: argparse.Namespace) -> int:
    if args.action == "create" and not args.name:
        raise UsageError("fleet create needs a NAME")
    backend = _backend(args)
    try:
        if args.action == "list":
            fleets = backend.fleets()
            if args.json:
                print_json(fleets)
            else:
                print_table("fleets", ["name", "channels", "created"],
                       [[f["name"], ", ".join(f["channels"]), f["created"]] for f in fleets])
            return 0
        fleet = backend.create_fleet(args.name)
    finally:
        backend.close()
    if args.json:
        print_json(fleet)
    else:
        print(f"created fleet {fleet['name']} with channel {', '.join(fleet['channels'])}")
    return 0


def _channel(args: argparse.Namespace) -> int:
    if args.action == "create" and (not args.fleet or not args.name):
        raise UsageError("channel create needs --fleet FLEET and a NAME")
    backend = _backend(args)
    try:
        if args.action == "list":
            fleets = backend.fleets()
            if args.fleet and args.fleet not in {f["name"] for f in fleets}:
                raise NotFoundError(f"no fleet {args.fleet!r} (see `modelsync admin fleet list`)")
            rows = [{"fleet": f["name"], "channel": c} for f in fleets for c in f["channels"]
                    if not args.fleet or f["name"] == args.fleet]
            if args.json:
                print_json(rows)
            else:
                print_table("channels", ["fleet", "channel"], [[r["fleet"], r["channel"]] for r in rows])
            return 0
        fleet = backend.create_channel(args.fleet, args.name)
    finally:
        backend.close()
    if args.json:
        print_json(fleet)
    else:
        print(f"created channel {args.name} in fleet {args.fleet}")
    return 0


def _token(args: argparse.Namespace) -> int:
    from sync_service.auth import parse_scopes

    if args.action == "revoke" and args.token_id is None:
        raise UsageError("token revoke needs the token's id (see `modelsync admin token list`)")
    scopes: list[str] = []
    if args.action == "create":
        if args.enroll:
            if args.scope:
                raise UsageError("--enroll tokens carry no scopes: drop --scope")
            if not args.fleet:
                raise UsageError("--enroll needs --fleet FLEET")
        else:
            if args.fleet:
                raise UsageError("--fleet applies to enrollment tokens: add --enroll")
            try:
                scopes = list(parse_scopes(args.scope or ""))
            except ValueError as exc:
                raise UsageError(f"--scope: {exc}") from None
    backend = _backend(args)
    try:
        if args.action == "list":
            tokens = backend.tokens(args.all)
            if args.json:
                print_json(tokens)
            else:
                print_table("tokens", ["id", "kind", "scopes", "fleet", "name", "created", "revoked"], [
                    [str(t["id"]), t["kind"], ",".join(t["scopes"]) or "-", t["fleet"] or "-", t["name"],
                     t["created"], t["revoked"] or ""] for t in tokens])
            return 0
        if args.action == "revoke":
            row = backend.revoke_token(args.token_id)
            if args.json:
                print_json(row)
            else:
                print(f"revoked token {args.token_id} ({row['kind']} {row['name']})".rstrip())
            return 0
        kind = "enrollment" if args.enroll else "publisher"
        created = backend.create_token(kind, scopes, args.fleet if args.enroll else None, args.name)
    finally:
        backend.close()
    if args.json:
        print_json(created)
        return 0
    print(created["token"])
    scope_text = ", " + ",".join(created["scopes"]) if created["scopes"] else ""
    print(f"token id {created['id']} ({created['kind']}{scope_text}): "
          "shown once, store it now; only its hash is kept", file=sys.stderr)
    return 0
