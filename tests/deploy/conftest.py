"""A real ``modelsync serve`` (SQLite) behind Debian's nginx with the shipped site
configuration and a certificate from a CA made here; two fleets, each with its own
release, so what one fleet's devices see through the caches can be told apart."""

from __future__ import annotations

import json
import os
import shutil
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import MakeBundle
from tests.deploy.nginx_harness import RunningNginx, Tls, make_tls, nginx_binary, running_nginx


@dataclass
class Deployment:
    nginx: RunningNginx
    service_url: str
    tls: Tls
    database: str
    root: dict[str, Any]
    publisher: str
    enroll: dict[str, str]  # fleet -> enrollment token
    bundles: dict[int, Path]

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.tls.ca))

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.nginx.url, verify=self.ssl_context(), timeout=30, **kwargs)


def prepare_database(data: Path) -> tuple[str, str, dict[str, str]]:
    from sqlmodel import Session

    from sync_service import crud
    from sync_service.db import make_engine, migrate

    data.mkdir(parents=True)
    url = f"sqlite:///{data / 'modelsync.db'}"
    engine = make_engine(url)
    migrate(engine)
    enroll: dict[str, str] = {}
    with Session(engine) as session:
        publisher, _ = crud.create_token(session=session, kind="publisher", scopes=("publish", "release"))
        for name in ("alpha", "beta"):
            fleet = crud.create_fleet(session=session, name=name)
            enroll[name], _ = crud.create_token(session=session, kind="enrollment", fleet_id=fleet.id)
        session.commit()
    engine.dispose()
    return url, publisher, enroll


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, keys_dir: Path, make_bundle: MakeBundle
) -> Iterator[Deployment]:
    if nginx_binary() is None:
        # `make test` installs it where it can (root with apt-get); CI must not skip silently
        why = "nginx is not installed (Debian: apt-get install nginx)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    from device_sim.service_process import running_service
    from sync_service.client import ServiceClient

    work = tmp_path_factory.mktemp("deploy")
    server_keys = work / "server-keys"
    server_keys.mkdir()
    shutil.copy(keys_dir / "root.json", server_keys / "root.json")
    shutil.copytree(keys_dir / "roots", server_keys / "roots")
    shutil.copy(keys_dir / "index.key", server_keys / "index.key")
    database, publisher, enroll = prepare_database(work / "data")
    bundles = {1: make_bundle(1), 2: make_bundle(2)}
    tls = make_tls(work / "tls")
    with (
        running_service(work / "data", server_keys / "root.json", server_keys / "index.key",
                        log_path=work / "service.log") as service,
        running_nginx(work / "nginx", int(service.url.rsplit(":", 1)[1]), tls) as nginx,
    ):
        deployment = Deployment(nginx, service.url, tls, database,
                                json.loads((keys_dir / "root.json").read_text()),
                                publisher, enroll, bundles)
        # Published and released through nginx: uploads stream through /v1/bundles.
        transport = httpx.HTTPTransport(verify=deployment.ssl_context())
        with ServiceClient(nginx.url, publisher, transport=transport) as api:
            for bundle in bundles.values():
                status, body = api.publish(bundle)
                assert status == 201, body
        with deployment.client(headers={"Authorization": f"Bearer {publisher}"}) as http:
            for fleet, version in (("alpha", 1), ("beta", 2)):
                r = http.post("/v1/releases", json={"fleet": fleet, "channel": "stable",
                                                    "model": "fleet-iforest", "version": version,
                                                    "percent": 100})
                assert r.status_code == 201, r.text
        yield deployment
