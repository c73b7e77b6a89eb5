"""The app factory. ``create_app`` checks everything the service needs before it answers
a request — keys, database schema, storage — and fails with one clear ModelSyncError;
what the app then serves (routers, ASGI layers) is listed in sync_service/api/main.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from sync_service.api.errors import install_error_handlers
from sync_service.api.main import add_middleware, api_router, api_routes
from sync_service.api.openapi import install_openapi
from sync_service.console import app as console
from sync_service.core.config import Settings
from sync_service.core.keys import ServiceKeys
from sync_service.db import ensure_migrated, make_engine, session_slots
from sync_service.errors import ServiceConfigError
from sync_service.phases import advance_periodically
from sync_service.storage import make_storage
from sync_service.storage.sweep import sweep_litter, sweep_periodically

log = logging.getLogger("modelsync.service")


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    sweeper = asyncio.create_task(
        sweep_periodically(
            app.state.storage, settings.data_dir, settings.stale_temp_s, settings.sweep_interval_s
        )
    )
    ramps = asyncio.create_task(advance_periodically(app, settings.phase_interval_s))
    try:
        yield
    finally:
        ramps.cancel()
        sweeper.cancel()
        app.state.engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    if settings.root_path is None or settings.index_key_path is None:
        raise ServiceConfigError(
            "the service needs its root and index key: --root KEYS/root.json --index-key KEYS/index.key "
            "(or MODELSYNC_ROOT_PATH, MODELSYNC_INDEX_KEY_PATH)"
        )
    passphrase = settings.index_key_passphrase
    offline_pass = settings.offline_key_passphrase
    keys = ServiceKeys(
        settings.root_path,
        settings.index_key_path,
        passphrase.get_secret_value().encode() if passphrase else None,
        offline_key_path=settings.offline_key_path,
        offline_passphrase=offline_pass.get_secret_value().encode() if offline_pass else None,
    )
    engine = make_engine(settings.resolved_database_url, pool_max=settings.database_pool_max)
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
    app.state.db_slots = session_slots(engine)
    app.state.storage = storage
    app.state.keys = keys
    install_error_handlers(app, api_routes())
    sweep_litter(storage, settings.data_dir, settings.stale_temp_s)
    app.include_router(api_router)
    console.install(app)
    add_middleware(app)
    install_openapi(app, api_routes())
    return app
