"""Alembic owns the schema: the tables the code declares are exactly what the migrations
build, and the service refuses a database that is empty or behind (except a brand-new
embedded SQLite file, which `serve` migrates itself and says so)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

from packager.cli import main
from sync_service.core.config import Settings
from sync_service.db import alembic_config, current_revision, head_revision, make_engine, migrate
from sync_service.errors import DatabaseNotMigrated
from sync_service.main import create_app
from tests.sync_service.conftest import DB_BACKENDS, PG_URL

FIRST = "0001"


@pytest.fixture(params=DB_BACKENDS)
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    assert PG_URL is not None
    schema = f"m_{uuid.uuid4().hex[:12]}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield (
            make_url(PG_URL)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def test_migrations_build_exactly_the_declared_tables(fresh_url: str) -> None:
    engine = make_engine(fresh_url)
    migrate(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    engine.dispose()
    assert diff == []


def test_downgrade_to_base_and_up_again(fresh_url: str) -> None:
    engine = make_engine(fresh_url)
    migrate(engine)
    command.downgrade(alembic_config(engine), "base")
    assert current_revision(engine) is None
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate(engine)
    assert current_revision(engine) == head_revision()
    engine.dispose()


@pytest.fixture
def base(tmp_path: Path, server_keys: Path) -> Settings:
    # Not the `settings` fixture: its database parameter would multiply these tests.
    return Settings(
        data_dir=tmp_path / "data",
        database_url=None,
        root_path=server_keys / "root.json",
        index_key_path=server_keys / "index.key",
    )


def _settings(base: Settings, url: str) -> Settings:
    return base.model_copy(update={"database_url": url})


def test_service_refuses_an_empty_non_sqlite_or_unmigrated_database(base: Settings, fresh_url: str) -> None:
    # auto-migration is for a brand-new embedded SQLite file only: explicit URLs never.
    with pytest.raises(DatabaseNotMigrated, match=r"not migrated.*modelsync admin migrate --database-url"):
        create_app(_settings(base, fresh_url))
    engine = make_engine(fresh_url)
    assert inspect(engine).get_table_names() == []  # refused means untouched
    engine.dispose()


def test_service_refuses_a_database_behind_head(base: Settings, fresh_url: str) -> None:
    if head_revision() == FIRST:
        pytest.skip("only one migration so far")
    engine = make_engine(fresh_url)
    migrate(engine, FIRST)
    with pytest.raises(DatabaseNotMigrated, match=rf"at revision {FIRST}, behind {head_revision()}"):
        create_app(_settings(base, fresh_url))
    assert current_revision(engine) == FIRST
    engine.dispose()


def test_serve_migrates_a_brand_new_sqlite_and_says_so(
    base: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fresh = base.model_copy(update={"database_url": None, "data_dir": tmp_path / "brand-new"})
    with caplog.at_level(logging.WARNING, logger="modelsync.db"):
        app = create_app(fresh)
    app.state.engine.dispose()
    assert any("is empty: creating the schema" in r.getMessage() for r in caplog.records)
    engine = make_engine(fresh.resolved_database_url)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_older_embedded_sqlite_is_refused_with_the_fix(base: Settings, tmp_path: Path) -> None:
    data = tmp_path / "old"
    engine = make_engine(f"sqlite:///{data / 'modelsync.db'}")
    migrate(engine, FIRST)
    engine.dispose()
    old = base.model_copy(update={"database_url": None, "data_dir": data})
    if head_revision() != FIRST:
        with pytest.raises(DatabaseNotMigrated, match=f"modelsync admin migrate --data-dir {data}"):
            create_app(old)
    assert main(["admin", "migrate", "--data-dir", str(data)]) == 0
    app = create_app(old)
    app.state.engine.dispose()


def test_empty_sqlite_refused_when_auto_migration_is_off(base: Settings, tmp_path: Path) -> None:
    fresh = base.model_copy(
        update={"database_url": None, "data_dir": tmp_path / "off", "auto_migrate_empty_sqlite": False}
    )
    with pytest.raises(DatabaseNotMigrated, match="not migrated"):
        create_app(fresh)


def test_serve_cli_prints_the_refusal(
    tmp_path: Path, server_keys: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "old"
    engine = make_engine(f"sqlite:///{data / 'modelsync.db'}")
    migrate(engine, FIRST)
    engine.dispose()
    if head_revision() == FIRST:
        pytest.skip("only one migration so far")
    rc = main(
        [
            "serve",
            "--data-dir",
            str(data),
            "--root",
            str(server_keys / "root.json"),
            "--index-key",
            str(server_keys / "index.key"),
        ]
    )
    assert rc == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the JSON log lines
    assert last.startswith("modelsync: error: database ")
    assert f"modelsync admin migrate --data-dir {data}" in last
