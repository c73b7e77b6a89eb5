"""One number for the PostgreSQL connections a replica may open (issue 8, item 9: the docs
said 30, the engine allowed 10 + 30 = 40): the setting sizes the engine, the docs quote it,
and the sessions admitted at once stay below it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI

from sync_service.core.config import Settings
from sync_service.db import make_engine, session_slots

OPERATIONS = Path(__file__).parents[2] / "docs" / "operations.md"
# Never connected to: create_engine opens nothing until the first query.
PG = "postgresql+psycopg://nobody@127.0.0.1:1/none"


def pool_capacity(engine: object) -> int:
    pool = engine.pool  # type: ignore[attr-defined]
    return int(pool.size() + pool._max_overflow)  # QueuePool has no public "max overflow"


@pytest.mark.parametrize("pool_max", [Settings().database_pool_max, 12, 75])
def test_engine_opens_at_most_the_setting(pool_max: int) -> None:
    engine = make_engine(PG, pool_max=pool_max)
    assert pool_capacity(engine) == pool_max
    engine.dispose()


def test_default_engine_follows_the_default_setting() -> None:
    engine = make_engine(PG)
    assert pool_capacity(engine) == Settings().database_pool_max
    engine.dispose()


def test_docs_quote_the_setting() -> None:
    text = " ".join(OPERATIONS.read_text().split())
    limit = Settings().database_pool_max
    quoted = re.search(r"opens a pool of up to (\d+) connections", text)
    assert quoted is not None and int(quoted.group(1)) == limit
    assert f"`MODELSYNC_DATABASE_POOL_MAX` | {limit} |" in text
    sized = re.search(r"size `max_connections` for N × (\d+)", text)
    assert sized is not None and int(sized.group(1)) == limit
    engine = make_engine(PG)
    slots = re.search(r"At most (\d+) requests .* hold a session at once", text)
    assert slots is not None and int(slots.group(1)) == session_slots(engine)
    engine.dispose()


def test_the_apps_engine_and_session_gate_fit_the_setting(app: FastAPI) -> None:
    settings: Settings = app.state.settings
    if app.state.engine.dialect.name == "postgresql":
        assert pool_capacity(app.state.engine) == settings.database_pool_max
    # Requests holding a session must leave connections for the routes that take their own.
    assert 0 < app.state.db_slots < pool_capacity(app.state.engine)
