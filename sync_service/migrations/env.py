"""Alembic environment: the engine comes from sync_service.db (config.attributes["engine"]),
or from MODELSYNC_DATABASE_URL when run through the `alembic` command itself."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine
from sqlmodel import SQLModel

import sync_service.models  # noqa: F401  (registers the tables on SQLModel.metadata)

config = context.config
target_metadata = SQLModel.metadata


def _engine() -> Engine:
    engine = config.attributes.get("engine")
    if engine is None:
        from sync_service.core.config import Settings
        from sync_service.db import make_engine

        settings = Settings()
        engine = make_engine(settings.resolved_database_url, pool_max=settings.database_pool_max)
    return engine


def run_migrations_online() -> None:
    with _engine().connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations_online()
