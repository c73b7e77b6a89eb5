"""The service's subcommands: ``serve``, ``admin`` (cli_admin.py), ``publish``, and
``release`` when sync_service/cli_release.py is present. Handlers are small and import
their heavy modules lazily (``modelsync --help`` must stay fast)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packager.errors import UsageError

KEEP_ALIVE_S = 75

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


def settings_from(args: argparse.Namespace, **extra: Any) -> Settings:
    """Environment (MODELSYNC_*) first, then the flags actually given on top."""
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


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the sync service (HTTP)")
    add_database_args(serve)
    serve.add_argument("--root", type=Path, help="KEYS/root.json (env MODELSYNC_ROOT_PATH)")
    serve.add_argument("--index-key", type=Path, help="KEYS/index.key (env MODELSYNC_INDEX_KEY_PATH)")
    serve.add_argument("--host", help="bind address (default 127.0.0.1; env MODELSYNC_HOST)")
    serve.add_argument("--port", type=int, help="port (default 8000; env MODELSYNC_PORT)")
    serve.add_argument(
        "--storage", choices=("local", "s3"), help="blob backend (env MODELSYNC_STORAGE_BACKEND)"
    )
    serve.add_argument("--log-level", default="INFO", help="INFO, DEBUG, WARNING …")
    serve.set_defaults(handler=_serve)

    from sync_service.cli_admin import register_admin

    register_admin(sub)

    publish = sub.add_parser("publish", help="upload a signed bundle to the sync service")
    publish.add_argument("bundle", type=Path, help="bundle directory written by `modelsync package`")
    publish.add_argument("--server", help="service URL (env MODELSYNC_SERVER or config file)")
    publish.add_argument("--token-file", type=Path, help="file holding a publisher token")
    publish.add_argument("--json", action="store_true", help="print the server's answer as JSON")
    publish.set_defaults(handler=_publish)

    try:
        from sync_service.cli_release import register_release
    except ImportError:
        return
    register_release(sub)


def _configure_logging(level: str) -> None:
    try:
        from sync_service.logging import configure_logging
    except ImportError:
        logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
        return
    configure_logging(level.upper())


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from sync_service.main import create_app

    settings = settings_from(
        args,
        root_path=args.root,
        index_key_path=args.index_key,
        host=args.host,
        port=args.port,
        storage_backend=args.storage,
    )
    _configure_logging(args.log_level)
    app = create_app(settings)
    logging.getLogger("modelsync.service").info(
        "serving on http://%s:%s (data %s)", settings.host, settings.port, settings.data_dir
    )
    # Idle keep-alive connections stay open longer than clients and load balancers keep theirs
    # (AWS ALB: 60 s), so the server is never the side that closes a connection a client is
    # about to reuse; uvicorn's 5 s default cost devices "Server disconnected" errors at scale.
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                timeout_keep_alive=KEEP_ALIVE_S)
    return 0


def _publish(args: argparse.Namespace) -> int:
    import json

    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from sync_service.client import ServiceClient, resolve_server, resolve_token

    server = resolve_server(args.server)
    token = resolve_token(args.token_file)
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        transient=True,
        disable=not sys.stderr.isatty(),
        console=None,
    )
    with progress, ServiceClient(server, token) as client:
        task = progress.add_task(f"upload {args.bundle.name}", total=None)
        status, body = client.publish(
            args.bundle, on_progress=lambda sent, total: progress.update(task, completed=sent, total=total)
        )
    if args.json:
        print(json.dumps(body, indent=2))
    elif status == 201:
        print(f"published {body['name']} v{body['version']} (manifest {body['manifest_sha256'][:12]}…)")
    else:
        print(
            f"{body['name']} v{body['version']} was already published with this exact manifest: nothing to do"
        )
    return 0
