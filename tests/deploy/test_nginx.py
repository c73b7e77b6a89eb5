"""The shipped nginx configuration (deploy/nginx/modelsync.conf) in front of a real
``serve``: devices sync through it over TLS verified against the test's CA; the index
cache keeps fleets apart and lets a revoked token through no longer than the service's
own token cache would; blobs are shared, ranged and still scoped to the fleet."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import zstandard

from device_sim.device import Device
from device_sim.updater import SyncResult
from tests.deploy.conftest import Deployment

pytestmark = pytest.mark.slow
DEADLINE_S = 30.0  # generous: a loaded machine is slow, never wrong


def register(deployment: Deployment, state: Path, fleet: str) -> str:
    Device.register(
        state, server=deployment.nginx.url, enroll_token=deployment.enroll[fleet], platform="linux",
        root_envelope=deployment.root, device_id=state.name,
        transport=httpx.AsyncHTTPTransport(verify=deployment.ssl_context()),
    )
    return str(Device(state).store.identity.token)


def sync(deployment: Deployment, state: Path) -> SyncResult:
    # A transport per run: the device's client closes it with the run's event loop.
    return Device(state, transport=httpx.AsyncHTTPTransport(verify=deployment.ssl_context())).sync()


def index_check(http: httpx.Client, token: str, etag: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if etag is not None:
        headers["If-None-Match"] = etag
    return http.get("/v1/channels/stable/index", headers=headers)


def test_devices_sync_through_nginx_over_verified_tls(deployment: Deployment, tmp_path: Path) -> None:
    with pytest.raises(httpx.ConnectError):  # the certificate is checked: no CA, no connection
        httpx.get(f"{deployment.nginx.url}/healthz", timeout=10)
    for fleet, version in (("alpha", 1), ("beta", 2)):
        state = tmp_path / f"{fleet}-device"
        register(deployment, state, fleet)
        result = sync(deployment, state)
        assert [(o.outcome, o.version) for o in result.installed] == [("installed", version)], result
        again = sync(deployment, state)
        assert again.ok and again.status == "not_modified", again


def test_index_cache_keeps_fleets_apart(deployment: Deployment, tmp_path: Path) -> None:
    tokens = {fleet: register(deployment, tmp_path / f"{fleet}-iso", fleet) for fleet in ("alpha", "beta")}
    hits: dict[str, int] = {"alpha": 0, "beta": 0}
    etags: dict[str, str] = {}
    deadline = time.monotonic() + DEADLINE_S
    with deployment.client() as http:
        # Alternate the fleets on the same URL until each has been answered from the cache.
        while min(hits.values()) < 2:
            assert time.monotonic() < deadline, f"no cache hits within {DEADLINE_S:.0f} s: {hits}"
            for fleet, token in tokens.items():
                r = index_check(http, token)
                assert r.status_code == 200, r.text
                assert json.loads(r.content)["signed"]["fleet"] == fleet
                assert "x-accel-expires" not in r.headers  # nginx keeps the service's hint to itself
                etags[fleet] = r.headers["etag"]
                hits[fleet] += r.headers.get("x-cache-status") == "HIT"
        assert etags["alpha"] != etags["beta"]
        # The cached answer still needs a token the service knows, and answers 304 itself.
        assert index_check(http, "msd_not-a-token").status_code == 401
        assert http.get("/v1/channels/stable/index").status_code == 401
        assert index_check(http, tokens["alpha"], etags["alpha"]).status_code == 304
        assert index_check(http, tokens["beta"], etags["alpha"]).status_code == 200


def test_revoked_token_stops_within_the_service_ttl(deployment: Deployment, tmp_path: Path) -> None:
    from sqlmodel import Session, col, select

    from sync_service import crud
    from sync_service.db import make_engine
    from sync_service.index_fast_path import TOKEN_TTL
    from sync_service.models import ApiToken

    token = register(deployment, tmp_path / "revoked-device", "alpha")
    deadline = time.monotonic() + DEADLINE_S
    with deployment.client() as http:
        while index_check(http, token).headers.get("x-cache-status") != "HIT":
            assert time.monotonic() < deadline, "the index was never answered from nginx's cache"
        engine = make_engine(deployment.database)
        with Session(engine) as session:
            rows = session.exec(select(ApiToken).where(col(ApiToken.device_id) == "revoked-device")).all()
            for row in rows:
                assert row.id is not None
                crud.revoke_token(session=session, token_id=row.id)
            session.commit()
        engine.dispose()
        revoked_at = time.time()
        answers: list[tuple[float, int]] = []
        deadline = time.monotonic() + DEADLINE_S
        while not answers or answers[-1][1] == 200:
            assert time.monotonic() < deadline, f"still 200 {DEADLINE_S:.0f} s after revocation"
            sent = time.time()
            r = index_check(http, token)
            answers.append((sent, r.status_code))
        assert r.status_code == 401 and r.json()["code"] == "invalid_token", r.text
        # The service alone serves a revoked token for at most TOKEN_TTL (its token cache);
        # nginx may not stretch that: no 200 for a request sent after it (+1 s for clocks).
        late = [round(sent - revoked_at, 3) for sent, status in answers
                if status == 200 and sent > revoked_at + TOKEN_TTL + 1.0]
        assert not late, f"200 for a revoked token {late} s after revocation"
        assert index_check(http, token).status_code == 401


def test_blobs_are_shared_ranged_and_scoped_to_the_fleet(deployment: Deployment, tmp_path: Path) -> None:
    bundle = deployment.bundles[2]  # released to beta only
    signed = json.loads((bundle / "manifest.json").read_text())["signed"]
    artifact = next(a for a in signed["artifacts"] if a["target"] == "cpu")
    data = (bundle / artifact["path"]).read_bytes()
    url = f"/v1/blobs/{artifact['sha256']}"
    beta = {"Authorization": f"Bearer {register(deployment, tmp_path / 'beta-blobs', 'beta')}"}
    alpha = {"Authorization": f"Bearer {register(deployment, tmp_path / 'alpha-blobs', 'alpha')}"}
    with deployment.client() as http:
        statuses = []
        for _ in range(2):
            r = http.get(url, headers={**beta, "Accept-Encoding": "identity"})
            assert r.status_code == 200 and r.content == data
            assert r.headers["etag"] == f'"{artifact["sha256"]}"'
            assert "immutable" in r.headers["cache-control"]
            statuses.append(r.headers.get("x-cache-status"))
        assert statuses[-1] == "HIT", statuses
        r = http.get(url, headers={**beta, "Range": "bytes=100-199", "Accept-Encoding": "zstd"})
        assert r.status_code == 206 and r.content == data[100:200], r.headers
        assert r.headers["content-range"] == f"bytes 100-199/{len(data)}"
        r = http.get(url, headers={**beta, "Range": f"bytes={len(data) - 10}-"})
        assert r.status_code == 206 and r.content == data[-10:]
        with http.stream("GET", url, headers={**beta, "Accept-Encoding": "zstd"}) as z:
            assert z.status_code == 200 and z.headers["content-encoding"] == "zstd"
            body = b"".join(z.iter_raw())
        assert zstandard.ZstdDecompressor().decompress(body, max_output_size=len(data)) == data
        assert http.get(url, headers={**beta, "If-None-Match": f'"{artifact["sha256"]}"'}).status_code == 304
        # Cached, yet still the service's call: another fleet's device, or no token, gets its answer.
        r = http.get(url, headers=alpha)
        assert r.status_code == 404 and r.json()["code"] == "blob_not_found", r.text
        r = http.get(url)
        assert r.status_code == 401 and r.json()["code"] == "missing_token", r.text
        r = http.get(url, headers={**beta, "Range": f"bytes={len(data)}-"})
        assert r.status_code == 416, r.text
