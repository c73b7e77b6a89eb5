"""The service on the S3 backend (moto over real HTTP): uploads land in the bucket, blobs
stream from it with Range and zstd, and with presigned downloads on the blob route answers
307 that a client follows without sending its token to the other host."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from sync_service.core.config import Settings
from sync_service.main import create_app
from sync_service.storage.s3 import S3Storage
from tests.sync_service.bundle_factory import tar_dir
from tests.sync_service.live import serve_in_thread
from tests.sync_service.s3_server import new_bucket


@pytest.fixture(params=[False, True], ids=["proxied", "presigned"])
def s3_app(request: pytest.FixtureRequest, settings: Settings, s3_endpoint: str) -> Iterator[FastAPI]:
    bucket, _ = new_bucket(s3_endpoint)
    s3_settings = settings.model_copy(
        update={
            "storage_backend": "s3",
            "s3_bucket": bucket,
            "s3_endpoint_url": s3_endpoint,
            "s3_region": "us-east-1",
            "s3_presigned_downloads": request.param,
        }
    )
    app = create_app(s3_settings)
    yield app
    app.state.engine.dispose()


@pytest.fixture
def s3_url(s3_app: FastAPI) -> Iterator[str]:
    with serve_in_thread(s3_app) as url:
        yield url


def test_publish_and_download_through_s3(
    s3_app: FastAPI,
    s3_url: str,
    make_token: Callable[..., str],
    bundle_factory: Callable[..., Path],
) -> None:
    # make_token writes through the `app` fixture's engine: same database as s3_app.
    auth = {"Authorization": f"Bearer {make_token('publisher')}"}
    bundle = bundle_factory(weights=5000)
    with httpx.Client(base_url=s3_url, headers=auth) as http:
        r = http.post("/v1/bundles", content=tar_dir(bundle), headers={"Content-Type": "application/x-tar"})
        assert r.status_code == 201, r.text
        sha = r.json()["artifacts"][0]["sha256"]
        data = next(p.read_bytes() for p in bundle.iterdir() if p.name.startswith(sha))
        storage = s3_app.state.storage
        assert isinstance(storage, S3Storage) and storage.get(f"blobs/{sha}") == data

        plain = http.get(f"/v1/blobs/{sha}", headers={"Accept-Encoding": "identity"})
        if s3_app.state.settings.s3_presigned_downloads:
            assert plain.status_code == 307
            location = plain.headers["location"]
            assert location.startswith(s3_app.state.settings.s3_endpoint_url)
            assert plain.headers["cache-control"] == "no-store"
            followed = http.get(f"/v1/blobs/{sha}", follow_redirects=True)
            assert followed.status_code == 200 and followed.content == data
            # httpx drops Authorization on a cross-origin redirect: S3 never saw the token.
            assert "authorization" not in {k.lower() for k in followed.request.headers}
            return
        assert plain.status_code == 200 and plain.content == data
        part = http.get(f"/v1/blobs/{sha}", headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == data[100:200]
        z = http.get(f"/v1/blobs/{sha}", headers={"Accept-Encoding": "zstd"})
        assert z.headers["content-encoding"] == "zstd" and z.content == data  # httpx decodes zstd
