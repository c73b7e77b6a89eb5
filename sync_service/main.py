"""The app factory. ``create_app`` checks everything the service needs before it answers
a request — keys, database schema, storage — and fails with one clear ModelSyncError.

Routers: every module named in ``ROUTE_MODULES`` that exists under
``sync_service/api/routes/`` and defines ``router``. Extensions (metrics, logging,
background re-signing): every module in ``EXTENSIONS`` that exists and defines
``install(app)``; it may append async callables to ``app.state.on_startup`` /
``app.state.on_shutdown``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from sync_service.core.config import Settings
from sync_service.core.keys import ServiceKeys
from sync_service.db import ensure_migrated, make_engine
from sync_service.errors import ServiceConfigError, install_error_handlers
from sync_service.storage import make_storage

log = logging.getLogger("modelsync.service")

ROUTE_MODULES = (
    "health",
    "root",
    "bundles",
    "blobs",
    "models_api",
    "admin",
    "releases",
    "channels",
    "devices",
)
EXTENSIONS = ("sync_service.metrics", "sync_service.observability")

Hook = Callable[[FastAPI], Awaitable[None]]


def _optional_module(name: str) -> object | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:  # the module itself is absent; a broken import inside it is not hidden
            return None
        raise


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    for hook in app.state.on_startup:
        await hook(app)
    try:
        yield
    finally:
        for hook in reversed(app.state.on_shutdown):
            await hook(app)
        app.state.engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    if settings.root_path is None or settings.index_key_path is None:
        raise ServiceConfigError(
            "the service needs its root and index key: --root KEYS/root.json --index-key KEYS/index.key "
            "(or MODELSYNC_ROOT_PATH, MODELSYNC_INDEX_KEY_PATH)"
        )
    passphrase = settings.index_key_passphrase
    keys = ServiceKeys(
        settings.root_path,
        settings.index_key_path,
        passphrase.get_secret_value().encode() if passphrase else None,
    )
    engine = make_engine(settings.resolved_database_url)
    try:
        ensure_migrated(
            engine,
            url=settings.resolved_database_url,
            data_dir=settings.data_dir if settings.database_url is None else None,
            # Only the embedded default (no database URL given): an explicit URL is an
            # operator's database, migrated by an operator.
            auto_migrate_empty=settings.auto_migrate_empty_sqlite and settings.database_url is None,
        )
        storage = make_storage(settings)
    except BaseException:
        engine.dispose()
        raise

    app = FastAPI(
        title="modelsync sync service",
        version="1",
        description="Signed model bundles in, signed channel indexes and content-addressed blobs out.",
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.storage = storage
    app.state.keys = keys
    app.state.on_startup = []
    app.state.on_shutdown = []
    install_error_handlers(app)
    from sync_service.api.routes.bundles import clean_stale_uploads

    clean_stale_uploads(settings.data_dir / "uploads")

    for name in ROUTE_MODULES:
        module = _optional_module(f"sync_service.api.routes.{name}")
        if module is not None:
            app.include_router(module.router)  # type: ignore[attr-defined]
    for name in EXTENSIONS:
        module = _optional_module(name)
        if module is not None and hasattr(module, "install"):
            module.install(app)
    return app
