"""Fixtures for the sync service: keys, a migrated database (SQLite always, PostgreSQL too
when MODELSYNC_TEST_DATABASE_URL is set), the app, clients, a live server, tokens, a fleet,
and real signed bundles.

PostgreSQL runs get one fresh schema per test session (dropped at the end), so parallel
runs on the same database never meet; between tests every table is truncated.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlmodel import Session, SQLModel

from packager.keys import load_private_key
from sync_service import crud
from sync_service.core.config import Settings
from sync_service.db import make_engine, migrate
from sync_service.main import create_app
from sync_service.models import Fleet
from tests.sync_service.bundle_factory import make_bundle
from tests.sync_service.live import serve_in_thread

PG_URL = os.environ.get("MODELSYNC_TEST_DATABASE_URL")
DB_BACKENDS = ["sqlite", *(["postgresql"] if PG_URL else [])]


@dataclass(frozen=True)
class DbTemplate:
    backend: str
    url: str | None  # PostgreSQL: URL pinned to the session's schema
    sqlite_file: Path | None  # SQLite: a migrated file copied into each test's data dir


@pytest.fixture(scope="session", params=DB_BACKENDS)
def db_template(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DbTemplate]:
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("dbtemplate") / "modelsync.db"
        engine = make_engine(f"sqlite:///{path}")
        migrate(engine)
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        engine.dispose()
        yield DbTemplate("sqlite", None, path)
        return
    assert PG_URL is not None
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    url_text = url.render_as_string(hide_password=False)
    engine = make_engine(url_text)
    migrate(engine)
    engine.dispose()
    try:
        yield DbTemplate("postgresql", url_text, None)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def database_url(db_template: DbTemplate, tmp_path: Path) -> str | None:
    """None for SQLite (the embedded default path under the test's data dir)."""
    if db_template.sqlite_file is not None:
        (tmp_path / "data").mkdir(exist_ok=True)
        shutil.copy(db_template.sqlite_file, tmp_path / "data" / "modelsync.db")
        return None
    assert db_template.url is not None
    engine = make_engine(db_template.url)
    tables = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE TABLE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return db_template.url


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 for the session (AWS_* test credentials set meanwhile)."""
    from tests.sync_service.s3_server import moto_s3

    with moto_s3() as endpoint:
        yield endpoint


# --------------------------------------------------------------------------- keys


@pytest.fixture(scope="session")
def service_keys_dir(keys_dir: Path) -> Path:
    """The whole keys directory as `modelsync keys init` writes it (offline keys included):
    tests/conftest.py's ``keys_dir``, so its ``make_bundle`` bundles are trusted here too."""
    return keys_dir


@pytest.fixture(scope="session")
def server_keys(service_keys_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What an operator copies to the server: root.json, roots/ and index.key only."""
    d = tmp_path_factory.mktemp("server") / "keys"
    d.mkdir()
    shutil.copy(service_keys_dir / "root.json", d / "root.json")
    shutil.copytree(service_keys_dir / "roots", d / "roots")
    shutil.copy(service_keys_dir / "index.key", d / "index.key")
    return d


@pytest.fixture(scope="session")
def publisher_keys(service_keys_dir: Path) -> list[Ed25519PrivateKey]:
    return [load_private_key(service_keys_dir / "publisher.key")]


# --------------------------------------------------------------------------- app and clients


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None, server_keys: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        storage_backend="local",
        blob_dir=None,
        root_path=server_keys / "root.json",
        index_key_path=server_keys / "index.key",
        upload_max_bytes=8 * 1024 * 1024,
    )


@pytest.fixture
def app(settings: Settings) -> Iterator[FastAPI]:
    application = create_app(settings)
    yield application
    application.state.engine.dispose()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
async def async_client(app: FastAPI) -> Any:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.fixture
def live_server(app: FastAPI) -> Iterator[str]:
    """Base URL of ``app`` on a real uvicorn server on 127.0.0.1 (random port)."""
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture
def db_session(app: FastAPI) -> Iterator[Session]:
    with Session(app.state.engine) as session:
        yield session


# --------------------------------------------------------------------------- tokens, fleets


@pytest.fixture
def make_token(app: FastAPI) -> Callable[..., str]:
    """``make_token(kind="publisher", scopes=("publish",), fleet=None, name="")`` → plain token."""

    def make(
        kind: str = "publisher",
        scopes: tuple[str, ...] = ("publish", "release", "admin"),
        fleet: str | None = None,
        device_id: str | None = None,
        name: str = "test",
    ) -> str:
        with Session(app.state.engine) as session:
            fleet_id = None
            if fleet is not None:
                row = crud.get_fleet(session=session, name=fleet)
                assert row is not None, f"no fleet {fleet}"
                fleet_id = row.id
            plain, _ = crud.create_token(
                session=session,
                kind=kind,  # type: ignore[arg-type]
                scopes=scopes if kind == "publisher" else (),
                fleet_id=fleet_id,
                device_id=device_id,
                name=name,
            )
            session.commit()
        return plain

    return make


@pytest.fixture
def publisher_token(make_token: Callable[..., str]) -> str:
    """A publisher token with every scope (publish, release, admin)."""
    return make_token("publisher")


@pytest.fixture
def auth(publisher_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {publisher_token}"}


@pytest.fixture
def fleet(app: FastAPI) -> str:
    """A fleet named ``field`` with its default ``stable`` channel; returns the name."""
    with Session(app.state.engine) as session:
        crud.create_fleet(session=session, name="field")
        session.commit()
    return "field"


@pytest.fixture
def fleet_row(app: FastAPI, fleet: str) -> Fleet:
    with Session(app.state.engine) as session:
        row = crud.get_fleet(session=session, name=fleet)
        assert row is not None
        return row


@pytest.fixture
def enrollment_token(make_token: Callable[..., str], fleet: str) -> str:
    return make_token("enrollment", fleet=fleet)


# --------------------------------------------------------------------------- bundles


@pytest.fixture
def bundle_factory(tmp_path: Path, publisher_keys: list[Ed25519PrivateKey]) -> Callable[..., Path]:
    """``bundle_factory(name="demo", version=1, seed=0, weights=4, flip=())`` → bundle dir."""
    counter = iter(range(10_000))

    def build(**kw: Any) -> Path:
        keys = kw.pop("keys", publisher_keys)
        return make_bundle(tmp_path / f"bundle-{next(counter)}", keys, **kw)

    return build


@pytest.fixture
def bundle_dir(bundle_factory: Callable[..., Path]) -> Path:
    return bundle_factory()
