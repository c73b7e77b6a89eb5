"""The service's subcommands: ``serve``, ``admin`` (cli_admin.py), ``publish``, ``release``
(cli_release.py), ``models`` and ``devices`` (cli_inventory.py). Handlers are small and
import their heavy modules lazily (``modelsync --help`` must stay fast)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from sync_service.cli_admin import register_admin
from sync_service.cli_common import add_database_args, add_server_args, settings_from
from sync_service.cli_inventory import register_inventory
from sync_service.cli_pack import register_pack
from sync_service.cli_release import register_release

KEEP_ALIVE_S = 75


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the sync service (HTTP)")
    add_database_args(serve)
    serve.add_argument("--root", type=Path, help="KEYS/root.json (env MODELSYNC_ROOT_PATH)")
    serve.add_argument("--index-key", type=Path, help="KEYS/index.key (env MODELSYNC_INDEX_KEY_PATH)")
    serve.add_argument(
        "--offline-key", type=Path,
        help="KEYS/offline.key, for pack export (env MODELSYNC_OFFLINE_KEY_PATH; "
        "default: beside --index-key)",
    )
    serve.add_argument("--host", help="bind address (default 127.0.0.1; env MODELSYNC_HOST)")
    serve.add_argument("--port", type=int, help="port (default 8000; env MODELSYNC_PORT)")
    serve.add_argument(
        "--storage", choices=("local", "s3"), help="blob backend (env MODELSYNC_STORAGE_BACKEND)"
    )
    serve.add_argument("--log-level", default="INFO", help="INFO, DEBUG, WARNING …")
    serve.add_argument(
        "--ssl-certfile", type=Path,
        help="serve HTTPS with this PEM certificate chain (env MODELSYNC_SSL_CERTFILE)",
    )
    serve.add_argument(
        "--ssl-keyfile", type=Path, help="the certificate's PEM private key (env MODELSYNC_SSL_KEYFILE)"
    )
    serve.set_defaults(handler=_serve)

    register_admin(sub)

    publish = sub.add_parser("publish", help="upload a signed bundle to the sync service")
    publish.add_argument("bundle", type=Path, help="bundle directory written by `modelsync package`")
    add_server_args(publish, token_help="file holding a publisher token")
    publish.set_defaults(handler=_publish)

    register_release(sub)
    register_inventory(sub)
    register_pack(sub)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from sync_service.listen import bind, plain_http_warning, tls_options
    from sync_service.logging import configure_logging
    from sync_service.main import create_app

    settings = settings_from(
        args,
        root_path=args.root,
        index_key_path=args.index_key,
        offline_key_path=args.offline_key,
        host=args.host,
        port=args.port,
        storage_backend=args.storage,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
    )
    tls = tls_options(settings)
    with bind(settings.host, settings.port) as sock:  # closed on every way out, refusals included
        configure_logging(args.log_level.upper())
        app = create_app(settings)
        log = logging.getLogger("modelsync.service")
        warning = plain_http_warning(settings, bool(tls))
        if warning is not None:
            log.warning(warning)
        log.info(
            "serving on %s://%s:%s (data %s)",
            "https" if tls else "http", settings.host, settings.port, settings.data_dir,
        )
        # Idle keep-alive connections stay open longer than clients and load balancers keep
        # theirs (AWS ALB: 60 s), so the server is never the side that closes a connection a
        # client is about to reuse; uvicorn's 5 s default cost devices "Server disconnected"
        # errors at scale.
        config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None,
                                access_log=False, timeout_keep_alive=KEEP_ALIVE_S, **tls)
        uvicorn.Server(config).run(sockets=[sock])
    return 0


def _publish(args: argparse.Namespace) -> int:
    import json

    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from modelsync.api import publish
    from sync_service.client import resolve_server, resolve_token

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
    with progress:
        task = progress.add_task(f"upload {args.bundle.name}", total=None)
        done = publish(
            args.bundle, server=server, token=token,
            on_progress=lambda sent, total: progress.update(task, completed=sent, total=total),
        )
    if args.json:
        print(json.dumps(done.raw, indent=2))
    elif done.created:
        print(f"published {done.name} v{done.version} (manifest {done.manifest_sha256[:12]}…)")
    else:
        print(f"{done.name} v{done.version} was already published with this exact manifest: nothing to do")
    return 0
