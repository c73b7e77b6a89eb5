"""The real sync service for the device's tests: an app on embedded SQLite with the
session's keys, tokens made through its crud layer, bundles published and released over
its HTTP API. Test modules import these fixtures by name."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from sync_service import crud
from sync_service.core.config import Settings
from sync_service.main import create_app

FLEET = "field"


@pytest.fixture
def service_app(tmp_path: Path, keys_dir: Path) -> Iterator[FastAPI]:
    settings = Settings(data_dir=tmp_path / "data", root_path=keys_dir / "root.json",
                        index_key_path=keys_dir / "index.key", storage_backend="local")
    application = create_app(settings)
    with Session(application.state.engine) as session:
        crud.create_fleet(session=session, name=FLEET)  # with its default "stable" channel
        session.commit()
    yield application
    application.state.engine.dispose()


def make_token(app: FastAPI, kind: Literal["publisher", "enrollment"], **kw: Any) -> str:
    with Session(app.state.engine) as session:
        if kind == "enrollment":
            fleet = crud.get_fleet(session=session, name=FLEET)
            assert fleet is not None
            kw["fleet_id"] = fleet.id
        plain, _ = crud.create_token(session=session, kind=kind, name="t", **kw)
        session.commit()
    return str(plain)


@pytest.fixture
def admin(service_app: FastAPI) -> Iterator[Callable[..., httpx.Response]]:
    token = make_token(service_app, "publisher", scopes=("publish", "release", "admin"))
    with TestClient(service_app) as client:
        def call(method: str, path: str, **kw: Any) -> httpx.Response:
            resp: httpx.Response = client.request(
                method, path, headers={"Authorization": f"Bearer {token}"}, **kw)
            return resp
        yield call


def publish_and_release(admin: Callable[..., httpx.Response], bundle: Path, percent: float = 100.0) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in sorted(bundle.iterdir()):
            tar.add(f, arcname=f.name)
    r = admin("POST", "/v1/bundles", content=buf.getvalue())
    assert r.status_code in (200, 201), r.text
    body = r.json()
    r = admin("POST", "/v1/releases", json={"fleet": FLEET, "channel": "stable", "model": body["name"],
                                             "version": body["version"], "percent": percent})
    assert r.status_code == 201, r.text
