"""GET /v1/blobs/{sha256} and /delta: access rules, Range, zstd, deltas."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bsdiff4
import httpx
import pytest
import zstandard
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from sync_service import crud
from sync_service.models import Release
from tests.sync_service.bundle_factory import tar_dir


def publish(client: TestClient, auth: dict[str, str], bundle: Path) -> dict[str, Any]:
    r = client.post(
        "/v1/bundles", content=tar_dir(bundle), headers={**auth, "Content-Type": "application/x-tar"}
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def release(app: FastAPI, fleet: str, name: str, version: int) -> None:
    """A Release row as the release routes would write it (the blob rule reads only this)."""
    with Session(app.state.engine) as s:
        f = crud.get_fleet(session=s, name=fleet)
        assert f is not None and f.id is not None
        ch = crud.get_channel(session=s, fleet_id=f.id, name="stable")
        mv = crud.get_model_version(session=s, name=name, version=version)
        assert ch is not None and ch.id is not None and mv is not None and mv.id is not None
        s.add(Release(channel_id=ch.id, model_version_id=mv.id, model_name=name, percent=100.0, salt="s"))
        s.commit()


@pytest.fixture
def published(
    client: TestClient, auth: dict[str, str], bundle_factory: Callable[..., Path]
) -> dict[str, Any]:
    body = publish(client, auth, bundle_factory(weights=3000))
    data = next(
        p.read_bytes()
        for p in (client.app.state.settings.resolved_blob_dir / "blobs").iterdir()  # type: ignore[attr-defined]
        if p.name == body["artifacts"][0]["sha256"]
    )
    return {**body, "sha": body["artifacts"][0]["sha256"], "data": data}


def test_publisher_downloads_with_cache_headers(
    client: TestClient, auth: dict[str, str], published: dict[str, Any]
) -> None:
    # httpx asks for zstd by default when zstandard is installed: ask for identity here.
    r = client.get(f"/v1/blobs/{published['sha']}", headers={**auth, "Accept-Encoding": "identity"})
    assert r.status_code == 200
    assert r.content == published["data"]
    assert r.headers["etag"] == f'"{published["sha"]}"'
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert r.headers["accept-ranges"] == "bytes"
    assert int(r.headers["content-length"]) == len(published["data"])
    again = client.get(f"/v1/blobs/{published['sha']}", headers={**auth, "If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_manifest_blob_is_the_uploaded_bytes(
    client: TestClient, auth: dict[str, str], bundle_dir: Path
) -> None:
    body = publish(client, auth, bundle_dir)
    r = client.get(f"/v1/blobs/{body['manifest_sha256']}", headers=auth)
    assert r.content == (bundle_dir / "manifest.json").read_bytes()


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=10-19", 10, 19),
        ("bytes=100-", 100, None),
        ("bytes=-16", -16, None),
        ("bytes=0-99999999", 0, None),
    ],
)
def test_range_is_206(
    client: TestClient,
    auth: dict[str, str],
    published: dict[str, Any],
    header: str,
    start: int,
    end: int | None,
) -> None:
    data: bytes = published["data"]
    r = client.get(f"/v1/blobs/{published['sha']}", headers={**auth, "Range": header})
    assert r.status_code == 206
    want = data[start : (end + 1 if end is not None else None)]
    assert r.content == want
    first = start if start >= 0 else len(data) + start
    assert r.headers["content-range"] == f"bytes {first}-{first + len(want) - 1}/{len(data)}"


def test_range_beyond_end_is_416(client: TestClient, auth: dict[str, str], published: dict[str, Any]) -> None:
    size = len(published["data"])
    r = client.get(f"/v1/blobs/{published['sha']}", headers={**auth, "Range": f"bytes={size}-"})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{size}"
    assert r.json()["code"] == "range_not_satisfiable"


def test_malformed_range_is_ignored(
    client: TestClient, auth: dict[str, str], published: dict[str, Any]
) -> None:
    r = client.get(f"/v1/blobs/{published['sha']}", headers={**auth, "Range": "bytes=0-1,5-6"})
    assert r.status_code == 200 and r.content == published["data"]


def test_publish_precomputes_the_zstd_copy(published: dict[str, Any], client: TestClient) -> None:
    storage = client.app.state.storage  # type: ignore[attr-defined]
    assert storage.exists(f"zstd/{published['sha']}")


def test_zstd_transfer(client: TestClient, auth: dict[str, str], published: dict[str, Any]) -> None:
    url = f"/v1/blobs/{published['sha']}"
    with client.stream("GET", url, headers={**auth, "Accept-Encoding": "zstd"}) as r:
        assert r.status_code == 200
        assert r.headers["content-encoding"] == "zstd"
        raw = b"".join(r.iter_raw())
    assert zstandard.ZstdDecompressor().decompress(raw) == published["data"]
    assert len(raw) < len(published["data"])
    # A Range request is always identity.
    r2 = client.get(url, headers={**auth, "Accept-Encoding": "zstd", "Range": "bytes=0-9"})
    assert r2.status_code == 206 and "content-encoding" not in r2.headers
    # q=0 refuses zstd.
    r3 = client.get(url, headers={**auth, "Accept-Encoding": "zstd;q=0, identity"})
    assert "content-encoding" not in r3.headers


def test_device_reads_only_its_fleets_released_blobs(
    app: FastAPI,
    client: TestClient,
    make_token: Callable[..., str],
    fleet: str,
    published: dict[str, Any],
    db_session: Session,
) -> None:
    crud.create_fleet(session=db_session, name="other")
    db_session.commit()
    mine = {"Authorization": f"Bearer {make_token('device', fleet=fleet, device_id='d1')}"}
    theirs = {"Authorization": f"Bearer {make_token('device', fleet='other', device_id='d2')}"}
    url = f"/v1/blobs/{published['sha']}"
    before = client.get(url, headers=mine)
    assert before.status_code == 404 and before.json()["code"] == "blob_not_found"
    release(app, fleet, published["name"], published["version"])
    assert client.get(url, headers=mine).status_code == 200
    assert client.get(f"/v1/blobs/{published['manifest_sha256']}", headers=mine).status_code == 200
    other = client.get(url, headers=theirs)
    assert other.status_code == 404  # another fleet: not 403, nothing leaked
    assert other.json() == before.json()


def test_enrollment_token_cannot_read_blobs(
    client: TestClient, enrollment_token: str, published: dict[str, Any]
) -> None:
    r = client.get(f"/v1/blobs/{published['sha']}", headers={"Authorization": f"Bearer {enrollment_token}"})
    assert r.status_code == 403


def test_unknown_and_malformed_sha(client: TestClient, auth: dict[str, str]) -> None:
    assert client.get("/v1/blobs/" + "0" * 64, headers=auth).status_code == 404
    bad = client.get("/v1/blobs/not-a-hash", headers=auth)
    assert bad.status_code == 422 and bad.json()["code"] == "validation_error"
    assert client.get("/v1/blobs/" + "0" * 64).status_code == 401


def test_delta_between_close_versions(
    client: TestClient, auth: dict[str, str], bundle_factory: Callable[..., Path]
) -> None:
    # Random float padding compresses badly; v2 changes a handful of values: a delta wins.
    v1 = publish(client, auth, bundle_factory(version=1, weights=20_000))
    v2 = publish(client, auth, bundle_factory(version=2, weights=20_000, flip=(5, 900, 15_000)))
    old_sha, new_sha = v1["artifacts"][0]["sha256"], v2["artifacts"][0]["sha256"]
    old = client.get(f"/v1/blobs/{old_sha}", headers=auth).content
    r = client.get(f"/v1/blobs/{new_sha}/delta", params={"from": old_sha}, headers=auth)
    assert r.status_code == 200, r.text
    assert r.headers["x-delta-format"] == "bsdiff4"
    assert r.headers["x-delta-from"] == old_sha
    assert hashlib.sha256(bsdiff4.patch(old, r.content)).hexdigest() == new_sha
    zsize = len(
        zstandard.ZstdCompressor(level=10).compress(client.get(f"/v1/blobs/{new_sha}", headers=auth).content)
    )
    assert len(r.content) < zsize
    cached = client.get(f"/v1/blobs/{new_sha}/delta", params={"from": old_sha}, headers=auth)
    assert cached.content == r.content


def test_delta_not_smaller_is_404(
    client: TestClient, auth: dict[str, str], bundle_factory: Callable[..., Path]
) -> None:
    # Unrelated random contents: the patch is no smaller than the compressed blob.
    v1 = publish(client, auth, bundle_factory(version=1, seed=1, weights=2000))
    v2 = publish(client, auth, bundle_factory(version=2, seed=2, weights=2000))
    r = client.get(
        f"/v1/blobs/{v2['artifacts'][0]['sha256']}/delta",
        params={"from": v1["artifacts"][0]["sha256"]},
        headers=auth,
    )
    assert r.status_code == 404 and r.json()["code"] == "delta_not_useful"


def test_delta_from_unreleased_blob_is_404_for_device(
    app: FastAPI,
    client: TestClient,
    auth: dict[str, str],
    make_token: Callable[..., str],
    fleet: str,
    bundle_factory: Callable[..., Path],
) -> None:
    v1 = publish(client, auth, bundle_factory(version=1, weights=20_000))
    v2 = publish(client, auth, bundle_factory(version=2, weights=20_000, flip=(1,)))
    release(app, fleet, "demo", 2)  # v1 never released to this fleet
    device = {"Authorization": f"Bearer {make_token('device', fleet=fleet, device_id='d1')}"}
    url = f"/v1/blobs/{v2['artifacts'][0]['sha256']}/delta"
    r = client.get(url, params={"from": v1["artifacts"][0]["sha256"]}, headers=device)
    assert r.status_code == 404 and r.json()["code"] == "blob_not_found"


def test_resumed_download_over_real_http(
    live_server: str, auth: dict[str, str], published: dict[str, Any]
) -> None:
    data: bytes = published["data"]
    url = f"{live_server}/v1/blobs/{published['sha']}"
    with httpx.Client(headers=auth) as http:
        head = http.get(url, headers={"Range": f"bytes=0-{len(data) // 3}"})
        tail = http.get(url, headers={"Range": f"bytes={len(head.content)}-"})
    assert head.status_code == tail.status_code == 206
    assert head.content + tail.content == data


def test_reference_is_stored_but_never_served_to_devices(
    app: FastAPI,
    client: TestClient,
    auth: dict[str, str],
    make_token: Callable[..., str],
    fleet: str,
    bundle_factory: Callable[..., Path],
) -> None:
    reference = b"joblib bytes stand-in" * 10
    body = publish(client, auth, bundle_factory(reference=reference))
    ref_sha = hashlib.sha256(reference).hexdigest()
    assert client.get(f"/v1/blobs/{ref_sha}", headers=auth).content == reference
    release(app, fleet, body["name"], body["version"])
    device = {"Authorization": f"Bearer {make_token('device', fleet=fleet, device_id='d1')}"}
    assert client.get(f"/v1/blobs/{body['artifacts'][0]['sha256']}", headers=device).status_code == 200
    # Devices never unpickle a reference from the network: it is not theirs to fetch.
    assert client.get(f"/v1/blobs/{ref_sha}", headers=device).status_code == 404
