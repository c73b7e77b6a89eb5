"""Engine, sessions and the migration check.

SQLite (the embedded default) runs in WAL mode with a busy timeout so readers never wait
for the single writer; PostgreSQL goes through psycopg 3. The schema belongs to Alembic
(sync_service/migrations): the service refuses a database that is not at the head
revision, except that `serve` may migrate a brand-new, empty embedded SQLite file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url

from sync_service.core.config import DATABASE_POOL_MAX
from sync_service.errors import DatabaseNotMigrated, ServiceConfigError

log = logging.getLogger("modelsync.db")
MIGRATIONS = Path(__file__).with_name("migrations")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


# Connections kept open between bursts; the rest of ``pool_max`` is overflow, closed when
# returned.
POOL_KEPT = 10
# Connections left over for the routes that open their own sessions outside the session
# gate (the index check: sync_service/api/routes/channels.py) — see session_slots.
POOL_RESERVE = 8
# The session gate never admits more than this, whatever the pool (anyio runs 40 threads).
MAX_SESSION_SLOTS = 32


def pool_capacity(engine: Engine) -> int:
    """Connections the engine may open at once: pool size plus overflow."""
    pool: Any = engine.pool
    return int(pool.size() + pool._max_overflow)  # QueuePool exposes no public getter


def session_slots(engine: Engine) -> int:
    """Requests that may hold a session at once (sync_service/api/deps.py, get_session):
    below both the pool and the thread count, so a holder always finds a connection and a
    thread."""
    return max(1, min(MAX_SESSION_SLOTS, pool_capacity(engine) - POOL_RESERVE))


def make_engine(url: str, *, pool_max: int = DATABASE_POOL_MAX) -> Engine:
    """``pool_max``: PostgreSQL connections at most (Settings.database_pool_max); the
    embedded SQLite file keeps its own, larger pool (connections there are file handles)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            try:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ServiceConfigError(f"cannot create the database directory: {exc}") from None
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            # As many connections as the threadpool has workers (anyio's default 40), so a
            # burst queues on threads rather than timing out on the pool.
            pool_size=20,
            max_overflow=30,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    try:
        kept = min(POOL_KEPT, pool_max)
        return create_engine(url, pool_pre_ping=True, pool_size=kept, max_overflow=pool_max - kept)
    except Exception as exc:  # bad driver name, bad URL
        raise ServiceConfigError(f"bad database URL {safe_url(url)}: {exc}") from None


def safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"


# --------------------------------------------------------------------------- migrations


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str | None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_empty(engine: Engine) -> bool:
    with engine.connect() as conn:
        return not inspect(conn).get_table_names()


def migrate(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade to ``revision``; returns (before, after)."""
    before = current_revision(engine)
    command.upgrade(alembic_config(engine), revision)
    return before, current_revision(engine)


def fix_command(url: str, data_dir: Path | None) -> str:
    if data_dir is not None and url.startswith("sqlite"):
        return f"modelsync admin migrate --data-dir {data_dir}"
    return f"modelsync admin migrate --database-url '{safe_url(url)}'"


def ensure_migrated(
    engine: Engine, *, url: str, data_dir: Path | None, auto_migrate_empty: bool = False
) -> None:
    """Raise DatabaseNotMigrated unless the schema is at head.

    ``auto_migrate_empty``: migrate a database with no tables at all (a fresh embedded
    SQLite file); an existing older database is always refused, because an upgrade of live
    data is an operator's decision, made with a backup at hand.
    """
    try:
        current = current_revision(engine)
        empty = current is None and is_empty(engine)
    except Exception as exc:
        raise ServiceConfigError(f"cannot reach the database {safe_url(url)}: {exc}") from None
    head = head_revision()
    if current == head:
        return
    if empty and auto_migrate_empty:
        log.warning("database %s is empty: creating the schema (migrating to %s)", safe_url(url), head)
        migrate(engine)
        return
    state = "not migrated (no schema)" if current is None else f"at revision {current}, behind {head}"
    heads = ScriptDirectory.from_config(alembic_config(engine))
    if current is not None and heads.get_revision(current) is None:
        state = f"at revision {current}, unknown to this version of modelsync (newer code ran on it?)"
    raise DatabaseNotMigrated(
        f"database {safe_url(url)} is {state}: run `{fix_command(url, data_dir)}`"
    )
