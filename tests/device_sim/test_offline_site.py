"""The offline-site scenario (device_sim/offline_site.py) on a small fleet: devices with no
network install from a pack, the online fleet moves on, and a week later (simulated clock)
the site comes online and converges; the service sees where the site's installs came from.
Real service (SQLite), real bundles, real onnxruntime."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel import Session

from device_sim.offline_site import SITE_INDEX_LIFETIME, run_offline_site
from sync_service import crud
from sync_service.core.config import Settings
from sync_service.main import create_app
from tests.device_sim.service import FLEET, make_token
from tests.sync_service.bundle_factory import tar_dir

MODEL = "fleet-iforest"


@pytest.fixture
def site_app(tmp_path: Path, keys_dir: Path) -> Iterator[FastAPI]:
    settings = Settings(data_dir=tmp_path / "data", root_path=keys_dir / "root.json",
                        index_key_path=keys_dir / "index.key", storage_backend="local",
                        index_lifetime=SITE_INDEX_LIFETIME)
    application = create_app(settings)
    with Session(application.state.engine) as session:
        crud.create_fleet(session=session, name=FLEET)
        session.commit()
    yield application
    application.state.engine.dispose()


async def test_a_site_installs_from_a_pack_and_converges_a_week_later(
    site_app: FastAPI, keys_dir: Path, make_bundle: Callable[..., Path], tmp_path: Path,
) -> None:
    token = make_token(site_app, "publisher", scopes=("publish", "release", "admin"))
    transport = httpx.ASGITransport(app=site_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service.test",
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        async def admin(method: str, path: str, **kw: Any) -> httpx.Response:
            return await client.request(method, path, **kw)

        for version in (1, 2):
            r = await admin("POST", "/v1/bundles", content=tar_dir(make_bundle(version)))
            assert r.status_code in (200, 201), r.text
        r = await admin("POST", "/v1/releases", json={"fleet": FLEET, "channel": "stable", "model": MODEL,
                                                      "version": 1, "percent": 100})
        assert r.status_code == 201, r.text
        report = await run_offline_site(
            admin=admin, server="http://service.test", transport=transport,
            enroll_token=make_token(site_app, "enrollment"),
            root_envelope=json.loads((keys_dir / "root.json").read_text()),
            fleet=FLEET, model=MODEL, old=1, new=2, state_root=tmp_path / "fleet",
            site_devices=3, online_devices=2,
        )
        devices = (await admin("GET", f"/v1/devices?fleet={FLEET}")).json()
    assert report.site_on_old == 3  # every site device took v1 from the pack, offline
    assert report.converged == 5  # a week later, site and online fleet alike run v2
    assert report.installs_from_packs == 3  # the service knows the site's v1 came from a pack
    assert len(report.install_seconds) == 3 and report.pack_bytes > 0
    assert {d["device_id"] for d in devices} >= {"site-0000", "site-0001", "site-0002"}
