"""Channel indexes: entries, signatures (checked with packager.manifest.verify_index against
the keys' root), versions, freshness re-signing, concurrent writers, and the HTTP hot path
(ETag, 304, token kinds, fleets)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from device_sim.errors import StaleIndexError
from device_sim.trust import check_index
from packager.errors import BadSignatureError
from packager.keys import load_private_key
from packager.manifest import Root, parse_time
from sync_service import crud
from sync_service.index import (
    IndexSigner,
    current_index,
    entries_newest_first,
    needs_resign,
    write_new_version,
)
from sync_service.index_fast_path import etag_matches
from sync_service.metrics import INDEX_SIGNED
from sync_service.models import Channel, ChannelIndexDoc, ModelVersion, Release
from tests.sync_service.fleet_helpers import (
    bearer,
    create_release,
    fresh_index,
    get_index,
    publish,
    register,
    service_root,
    verified_index,
)


@pytest.fixture
def root(server_keys: Path) -> Root:
    return service_root(server_keys)


@pytest.fixture
def signer(server_keys: Path) -> IndexSigner:
    return IndexSigner(keys=(load_private_key(server_keys / "index.key"),), lifetime=timedelta(days=7))


@pytest.fixture
def device_token(client: TestClient, enrollment_token: str) -> str:
    return register(client, enrollment_token, "dev-1")


def _channel(app: FastAPI, fleet: str = "field", name: str = "stable") -> Channel:
    with Session(app.state.engine) as session:
        f = crud.get_fleet(session=session, name=fleet)
        assert f is not None and f.id is not None
        ch = crud.get_channel(session=session, fleet_id=f.id, name=name)
        assert ch is not None
        return ch


# --------------------------------------------------------------------------- pure parts


def _pair(
    release_id: int, version: int, percent: float, state: str = "active"
) -> tuple[Release, ModelVersion]:
    mv = ModelVersion(
        id=version, name="m", version=version, manifest_sha256=f"{version:064x}", manifest_length=10
    )
    r = Release(
        id=release_id,
        channel_id=1,
        model_version_id=version,
        model_name="m",
        percent=percent,
        salt=f"s{release_id}",
        state=state,
    )
    return r, mv


def test_entries_newest_first_end_at_first_full_rollout() -> None:
    pairs = [_pair(1, 1, 100), _pair(2, 2, 100), _pair(3, 3, 10), _pair(4, 4, 50, "halted")]
    models = entries_newest_first(pairs)
    assert [e["version"] for e in models["m"]] == [3, 2]  # v1 unreachable behind v2 at 100%; v4 halted
    first = models["m"][0]
    assert first["manifest"] == {"path": f"blobs/{3:064x}", "length": 10, "sha256": f"{3:064x}"}
    assert first["rollout"] == {"percent": 10.0, "salt": "s3"}


def test_needs_resign_at_half_lifetime() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    life = timedelta(days=4)
    assert not needs_resign(now + timedelta(days=2, seconds=1), life, now)
    assert needs_resign(now + timedelta(days=2) - timedelta(seconds=1), life, now)
    assert needs_resign(now - timedelta(days=1), life, now)


@pytest.mark.parametrize(
    ("header", "match"),
    [('"abc"', True), ('W/"abc"', True), ('"x", "abc"', True), ("*", True), ('"abd"', False), ("abc", False)],
)
def test_etag_matching(header: str, match: bool) -> None:
    assert etag_matches(header, '"abc"') is match


# --------------------------------------------------------------------------- database


def test_every_write_is_a_new_signed_version(
    app: FastAPI, fleet: str, signer: IndexSigner, root: Root
) -> None:
    channel = _channel(app)
    with Session(app.state.engine) as session:
        first = write_new_version(session, channel, signer)
        second = write_new_version(session, channel, signer)
        session.commit()
    assert (first.version, second.version) == (1, 2)
    for stored in (first, second):
        index = fresh_index(json.loads(stored.body), root)
        assert (index.fleet, index.channel, index.version, index.models) == (
            "field",
            "stable",
            stored.version,
            {},
        )
        assert stored.etag == '"' + hashlib.sha256(stored.body).hexdigest() + '"'
        assert parse_time(index.expires) == stored.expires_at


def test_tampered_index_fails_verification(app: FastAPI, fleet: str, signer: IndexSigner, root: Root) -> None:
    with Session(app.state.engine) as session:
        stored = write_new_version(session, _channel(app), signer)
    doc = json.loads(stored.body)
    doc["signed"]["version"] += 1
    with pytest.raises(BadSignatureError):
        fresh_index(doc, root)


def test_near_expiry_is_resigned_with_same_entries(
    app: FastAPI, fleet: str, signer: IndexSigner, root: Root
) -> None:
    channel = _channel(app)
    with Session(app.state.engine) as session:
        first = current_index(session, channel, signer)
        assert current_index(session, channel, signer).version == first.version  # fresh: kept
        later = datetime.now(UTC) + timedelta(days=4)  # 3 days left of 7: under half
        freshness = INDEX_SIGNED.labels("freshness")._value.get()
        resigned = current_index(session, channel, signer, now=later)
        assert INDEX_SIGNED.labels("freshness")._value.get() == freshness + 1
    assert resigned.version == first.version + 1
    assert resigned.expires_at > first.expires_at
    old, new = json.loads(first.body)["signed"], json.loads(resigned.body)["signed"]
    assert old["models"] == new["models"]
    with pytest.raises(StaleIndexError):
        check_index(json.loads(first.body), root, fleet=fleet, channel="stable", trusted_version=None,
                    now=first.expires_at + timedelta(seconds=1))
    check_index(json.loads(resigned.body), root, fleet=fleet, channel="stable", trusted_version=first.version,
                now=later)


def test_concurrent_writers_get_distinct_consecutive_versions(
    app: FastAPI, fleet: str, signer: IndexSigner
) -> None:
    channel = _channel(app)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(5):
                with Session(app.state.engine) as session:
                    write_new_version(session, channel, signer)
                    session.commit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with Session(app.state.engine) as session:
        versions = session.exec(
            select(ChannelIndexDoc.version).where(ChannelIndexDoc.channel_id == channel.id)
        ).all()
    assert sorted(versions) == list(range(1, 21))


def test_concurrent_resigners_write_one_version(app: FastAPI, fleet: str, signer: IndexSigner) -> None:
    """Replicas that all notice the near expiry at once store one new version, not one each."""
    channel = _channel(app)
    with Session(app.state.engine) as session:
        current_index(session, channel, signer)
    later = datetime.now(UTC) + timedelta(days=5)
    barrier = threading.Barrier(4)
    seen: list[int] = []

    def resign() -> None:
        with Session(app.state.engine) as session:
            barrier.wait()
            seen.append(current_index(session, channel, signer, now=later).version)

    threads = [threading.Thread(target=resign) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [2, 2, 2, 2]


# --------------------------------------------------------------------------- HTTP


def test_index_etag_and_304(client: TestClient, fleet: str, device_token: str, root: Root) -> None:
    r = get_index(client, device_token)
    assert r.status_code == 200
    assert r.headers["etag"] == '"' + hashlib.sha256(r.content).hexdigest() + '"'
    assert r.headers["cache-control"] == "private, no-cache"
    assert r.headers["content-type"] == "application/json"
    fresh_index(r.json(), root)
    again = client.get(
        "/v1/channels/stable/index", headers={**bearer(device_token), "If-None-Match": r.headers["etag"]}
    )
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == r.headers["etag"]
    stale = client.get(
        "/v1/channels/stable/index", headers={**bearer(device_token), "If-None-Match": '"' + "0" * 64 + '"'}
    )
    assert stale.status_code == 200 and stale.content == r.content


def test_release_change_is_served_at_once_with_new_etag(
    client: TestClient,
    fleet: str,
    auth: dict[str, str],
    device_token: str,
    root: Root,
    bundle_factory: Callable[..., Path],
) -> None:
    before = get_index(client, device_token)
    publish(client, auth, bundle_factory(version=1))
    create_release(client, auth, version=1, percent=100)
    after = client.get(
        "/v1/channels/stable/index", headers={**bearer(device_token), "If-None-Match": before.headers["etag"]}
    )
    assert after.status_code == 200
    index = check_index(after.json(), root, fleet=fleet, channel="stable",
                        trusted_version=before.json()["signed"]["version"])
    assert [e.version for e in index.models["demo"]] == [1]


def test_index_needs_a_device_token(
    client: TestClient, fleet: str, auth: dict[str, str], enrollment_token: str
) -> None:
    assert client.get("/v1/channels/stable/index").status_code == 401
    bad = client.get("/v1/channels/stable/index", headers=bearer("msd_nope"))
    assert bad.status_code == 401 and bad.json()["code"] == "invalid_token"
    assert bad.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/channels/stable/index", headers=auth).status_code == 403
    assert client.get("/v1/channels/stable/index", headers=bearer(enrollment_token)).status_code == 403


def test_device_cannot_read_another_fleets_channel(
    app: FastAPI,
    client: TestClient,
    fleet: str,
    device_token: str,
    make_token: Callable[..., str],
    root: Root,
) -> None:
    with Session(app.state.engine) as session:
        other = crud.create_fleet(session=session, name="other")
        assert other.id is not None
        crud.create_channel(session=session, fleet_id=other.id, name="beta")
        session.commit()
    other_device = register(client, make_token("enrollment", fleet="other"), "dev-other")
    r = get_index(client, device_token, "beta")
    assert r.status_code == 404 and r.json()["code"] == "unknown_channel"
    # Same channel name, two fleets: each device gets its own fleet's index.
    mine = verified_index(client, device_token, root)
    theirs = verified_index(client, other_device, root)
    assert (mine.fleet, theirs.fleet) == ("field", "other")


def test_reregistering_revokes_the_old_token_for_the_index(
    client: TestClient, fleet: str, enrollment_token: str
) -> None:
    old = register(client, enrollment_token, "dev-9")
    assert get_index(client, old).status_code == 200  # now cached on this replica
    new = register(client, enrollment_token, "dev-9")
    assert get_index(client, old).status_code == 401
    assert get_index(client, new).status_code == 200


def test_stored_versions_match_served(
    app: FastAPI, client: TestClient, fleet: str, device_token: str
) -> None:
    body = get_index(client, device_token).content
    with Session(app.state.engine) as session:
        newest: Any = session.exec(
            select(ChannelIndexDoc).order_by(col(ChannelIndexDoc.version).desc())
        ).first()
    assert newest is not None and newest.body.encode() == body


def test_fast_path_answers_exactly_like_the_route(client: TestClient, fleet: str, device_token: str) -> None:
    """The first request (token not cached yet) goes through FastAPI's route; later ones are
    answered by IndexFastPath from the caches: same status, headers and bytes."""
    keep = ("etag", "cache-control", "content-type", "content-length")
    routed = get_index(client, device_token)
    fast = get_index(client, device_token)
    assert fast.status_code == routed.status_code == 200
    assert fast.content == routed.content
    assert {k: fast.headers.get(k) for k in keep} == {k: routed.headers.get(k) for k in keep}
    inm = {**bearer(device_token), "If-None-Match": routed.headers["etag"]}
    fast_304 = client.get("/v1/channels/stable/index", headers=inm)
    assert fast_304.status_code == 304 and fast_304.content == b""
    assert "content-length" not in fast_304.headers and "content-type" not in fast_304.headers
    assert fast_304.headers["x-request-id"]  # still inside the request-id and metrics layers


def test_a_second_replica_serves_a_change_within_its_cache_ttl(
    app: FastAPI,
    settings: Any,
    client: TestClient,
    fleet: str,
    auth: dict[str, str],
    device_token: str,
    bundle_factory: Callable[..., Path],
    root: Root,
) -> None:
    """Two app instances on one database, like two replicas behind a load balancer."""
    import time

    from sync_service.index import cache_for
    from sync_service.main import create_app

    replica = create_app(settings)
    try:
        with TestClient(replica) as other:
            cache_for(replica.state).ttl = 0.3
            before = verified_index(other, device_token, root)  # now cached on the replica
            publish(client, auth, bundle_factory(version=1))
            create_release(client, auth, version=1, percent=100)  # through the first instance
            assert verified_index(client, device_token, root).version == before.version + 1
            time.sleep(0.4)
            after = verified_index(other, device_token, root)
            assert after.version == before.version + 1 and "demo" in after.models
    finally:
        replica.state.engine.dispose()


def test_cache_revalidation_is_single_flight() -> None:
    import time

    from sync_service.index import IndexCache, StoredIndex

    cache = IndexCache(ttl=0.05)
    far = datetime.now(UTC) + timedelta(days=7)
    stored = StoredIndex(channel_id=1, version=3, body=b"{}", etag='"x"', expires_at=far)
    cache.put(7, "stable", 1, stored)
    assert cache.get(7, "stable", timedelta(days=7)) == (1, stored)
    time.sleep(0.06)
    assert cache.get(7, "stable", timedelta(days=7)) is None  # the first caller re-validates
    assert cache.get(7, "stable", timedelta(days=7)) == (1, stored)  # the others keep the copy
    assert cache.get(7, "stable", timedelta(days=30)) is None  # under half a lifetime left: re-read


def test_token_revoked_elsewhere_stops_working_after_the_ttl(
    app: FastAPI, client: TestClient, fleet: str, device_token: str
) -> None:
    import time

    from sync_service.auth import hash_token
    from sync_service.index_fast_path import token_cache_for

    token_cache_for(app.state).ttl = 0.2
    assert get_index(client, device_token).status_code == 200
    with Session(app.state.engine) as session:  # as `modelsync admin token revoke` would, from outside
        row = crud.get_token(session=session, plain=device_token)
        assert row is not None and row.id is not None
        crud.revoke_token(session=session, token_id=row.id)
        session.commit()
    time.sleep(0.3)
    assert [get_index(client, device_token).status_code for _ in range(3)] == [401, 401, 401]
    assert token_cache_for(app.state).get(hash_token(device_token)) is None
