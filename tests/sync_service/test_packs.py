"""``POST /v1/fleets/{fleet}/channels/{channel}/pack`` against the real service on SQLite and
PostgreSQL: what a pack holds (the root chain, an offline-role snapshot of the current index,
manifests and artifacts by content address), the filters, and every refusal as a documented
4xx with nothing left behind (docs/offline.md, docs/protocol.md "Offline packs")."""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from packager.manifest import ChannelIndex, Root, parse_time, utcnow, verify_offline_index
from packager.offline_pack import PackReader
from sync_service.core.config import Settings
from tests.sync_service.fleet_helpers import create_release, publish, register, service_root

ROUTE = "/v1/fleets/field/channels/stable/pack"


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None, server_keys: Path, service_keys_dir: Path) -> Settings:
    """The service of conftest.py, holding the offline-role key as well."""
    return Settings(
        data_dir=tmp_path / "data", database_url=database_url, storage_backend="local", blob_dir=None,
        root_path=server_keys / "root.json", index_key_path=server_keys / "index.key",
        offline_key_path=service_keys_dir / "offline.key", upload_max_bytes=8 * 1024 * 1024,
    )


@pytest.fixture
def released(client: TestClient, auth: dict[str, str], fleet: str,
             bundle_factory: Callable[..., Path]) -> dict[str, dict[str, Any]]:
    """demo v1 at 100%, other v1 at 40%: two models in one channel."""
    demo = publish(client, auth, bundle_factory(name="demo", version=1))
    other = publish(client, auth, bundle_factory(name="other", version=1, seed=3))
    create_release(client, auth, model="demo", version=1, percent=100)
    create_release(client, auth, model="other", version=1, percent=40)
    return {"demo": demo, "other": other}


def export(client: TestClient, auth: dict[str, str], tmp_path: Path, **body: Any) -> tuple[Path, Any]:
    r = client.post(ROUTE, json=body, headers=auth)
    assert r.status_code == 200, r.text
    path = tmp_path / f"pack-{r.headers['X-Pack-Id']}.mspack"
    path.write_bytes(r.content)
    return path, r


def members(path: Path) -> dict[str, list[tuple[str, bytes]]]:
    out: dict[str, list[tuple[str, bytes]]] = {}
    with PackReader(path) as reader:
        for m in reader.header.members:
            out.setdefault(m.kind, []).append((m.name, reader.read(m)))
    return out


def online_index(client: TestClient, enrollment_token: str) -> dict[str, Any]:
    device = register(client, enrollment_token, "pack-probe")
    r = client.get("/v1/channels/stable/index", headers={"Authorization": f"Bearer {device}"})
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    return body


def test_a_pack_holds_the_chain_a_signed_snapshot_and_every_blob_it_names(
    client: TestClient, auth: dict[str, str], released: dict[str, dict[str, Any]], enrollment_token: str,
    server_keys: Path, tmp_path: Path,
) -> None:
    path, r = export(client, auth, tmp_path, valid_days=10)
    assert r.headers["content-type"] == "application/vnd.modelsync.pack"
    assert r.headers["cache-control"] == "no-store"
    assert 'filename="field-stable-v' in r.headers["content-disposition"]
    got = members(path)
    root: Root = service_root(server_keys)
    assert [json.loads(b)["signed"]["version"] for _, b in got["root"]] == list(range(1, root.version + 1))
    ((_, raw_index),) = got["offline-index"]
    snapshot = verify_offline_index(json.loads(raw_index), root)  # the offline role's signature
    assert snapshot.fleet == "field" and snapshot.channel == "stable"
    assert snapshot.pack_id == r.headers["X-Pack-Id"]
    assert snapshot.version == int(r.headers["X-Pack-Index-Version"])
    assert snapshot.expires == r.headers["X-Pack-Expires"]
    window = parse_time(snapshot.expires) - parse_time(snapshot.valid_from)
    assert window == timedelta(days=10)
    assert abs(parse_time(snapshot.valid_from) - utcnow()) < timedelta(hours=1)
    # The same entries, the same version as the online index a device would fetch now:
    online = ChannelIndex.model_validate(online_index(client, enrollment_token)["signed"])
    assert snapshot.version == online.version
    assert {n: [e.model_dump() for e in es] for n, es in snapshot.models.items()} == {
        n: [e.model_dump() for e in es] for n, es in online.models.items()
    }
    # Every manifest the entries name, byte for byte, and every artifact those manifests name.
    manifests = {hashlib.sha256(b).hexdigest(): b for _, b in got["manifest"]}
    assert set(manifests) == {e.manifest.sha256 for es in snapshot.models.values() for e in es}
    wanted = {a["sha256"] for m in released.values() for a in m["artifacts"]}
    artifacts = {hashlib.sha256(b).hexdigest() for _, b in got["artifact"]}
    assert artifacts == wanted and len(got["artifact"]) == len(wanted)


def test_model_and_target_filters_keep_the_pack_small(
    client: TestClient, auth: dict[str, str], released: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    full, _ = export(client, auth, tmp_path)
    small, _ = export(client, auth, tmp_path, model="demo", targets=["cpu"])
    got = members(small)
    ((_, raw),) = got["offline-index"]
    assert set(json.loads(raw)["signed"]["models"]) == {"demo"}
    cpu = {a["sha256"] for a in released["demo"]["artifacts"] if a["target"] == "cpu"}
    assert {hashlib.sha256(b).hexdigest() for _, b in got["artifact"]} == cpu
    assert small.stat().st_size < full.stat().st_size
    with PackReader(small) as reader:  # compressed where it pays
        assert {m.encoding for m in reader.header.members if m.kind == "manifest"} == {"zstd"}


def test_two_exports_are_two_packs_of_the_same_snapshot(
    client: TestClient, auth: dict[str, str], released: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    _, a = export(client, auth, tmp_path)
    _, b = export(client, auth, tmp_path)
    assert a.headers["X-Pack-Id"] != b.headers["X-Pack-Id"]
    assert a.headers["X-Pack-Index-Version"] == b.headers["X-Pack-Index-Version"]


def _spooled() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("modelsync-pack-*")}


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/fleets/nowhere/channels/stable/pack", {}, 404, "unknown_fleet"),
        ("/v1/fleets/field/channels/nightly/pack", {}, 404, "unknown_channel"),
        (ROUTE, {"model": "nobody"}, 404, "unknown_model"),
        (ROUTE, {"valid_days": 0}, 422, "validation_error"),
        (ROUTE, {"valid_days": 91}, 409, "window_too_long"),  # beyond offline_max_days (90)
        (ROUTE, {"valid_days": "7"}, 422, "validation_error"),
        (ROUTE, {"valid_days": 7.5}, 422, "validation_error"),
        (ROUTE, {"valid_days": True}, 422, "validation_error"),
        (ROUTE, {"from_root": 99}, 404, "unknown_root"),
        (ROUTE, {"targets": ["webgpu"]}, 422, "validation_error"),
        (ROUTE, {"targets": []}, 422, "validation_error"),
        (ROUTE, {"surprise": 1}, 422, "validation_error"),
    ],
)
def test_bad_requests_are_precise_refusals(
    client: TestClient, auth: dict[str, str], released: dict[str, dict[str, Any]],
    path: str, body: dict[str, Any], status: int, code: str,
) -> None:
    before = _spooled()
    r = client.post(path, json=body, headers=auth)
    assert (r.status_code, r.json()["code"]) == (status, code), r.text
    assert _spooled() <= before  # nothing spooled is left behind
    documented = client.get("/openapi.json").json()["paths"][
        "/v1/fleets/{fleet}/channels/{channel}/pack"]["post"]["responses"]
    assert str(status) in documented


def test_nothing_released_is_409(client: TestClient, auth: dict[str, str], fleet: str) -> None:
    r = client.post(ROUTE, json={}, headers=auth)
    assert (r.status_code, r.json()["code"]) == (409, "nothing_to_pack"), r.text


def test_only_the_release_scope_exports(
    client: TestClient, auth: dict[str, str], released: dict[str, dict[str, Any]],
    make_token: Callable[..., str], enrollment_token: str,
) -> None:
    assert client.post(ROUTE, json={}).status_code == 401
    publish_only = make_token("publisher", scopes=("publish",))
    r = client.post(ROUTE, json={}, headers={"Authorization": f"Bearer {publish_only}"})
    assert (r.status_code, r.json()["code"]) == (403, "missing_scope"), r.text
    device = register(client, enrollment_token, "not-a-technician")
    assert client.post(ROUTE, json={}, headers={"Authorization": f"Bearer {device}"}).status_code == 403
    documented = client.get("/openapi.json").json()["paths"][
        "/v1/fleets/{fleet}/channels/{channel}/pack"]["post"]["responses"]
    assert {"401", "403", "404", "409", "413", "422"} <= set(documented)


def test_a_service_without_an_offline_key_says_so(
    tmp_path: Path, database_url: str | None, server_keys: Path, make_token: Callable[..., str],
) -> None:
    from sync_service.main import create_app

    app = create_app(Settings(
        data_dir=tmp_path / "other", database_url=database_url, storage_backend="local", blob_dir=None,
        root_path=server_keys / "root.json", index_key_path=server_keys / "index.key",
    ))
    try:
        with TestClient(app) as c:
            from sqlmodel import Session

            from sync_service import crud

            with Session(app.state.engine) as session:
                crud.create_fleet(session=session, name="field")
                plain, _ = crud.create_token(session=session, kind="publisher", scopes=("release",),
                                             fleet_id=None, device_id=None, name="t")
                session.commit()
            r = c.post(ROUTE, json={}, headers={"Authorization": f"Bearer {plain}"})
            assert (r.status_code, r.json()["code"]) == (409, "no_offline_key"), r.text
    finally:
        app.state.engine.dispose()
