"""POST /v1/bundles: accepted bundles, idempotency, and one test per attack, each asserting
the precise 4xx and that nothing was stored."""

from __future__ import annotations

import json
import shutil
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from packager.manifest import sign
from sync_service.models import Blob, ModelArtifact, ModelVersion
from tests.sync_service.bundle_factory import manifest_signed, tar_bytes, tar_dir, tiny_onnx

TAR = {"Content-Type": "application/x-tar"}


def post(client: TestClient, body: bytes, auth: dict[str, str]) -> httpx.Response:
    r: httpx.Response = client.post("/v1/bundles", content=body, headers={**TAR, **auth})
    return r


def state(client: TestClient) -> Any:
    assert isinstance(client.app, FastAPI)
    return client.app.state


def counts(client: TestClient) -> tuple[int, int, int, int]:
    """(model versions, artifacts, blob rows, blob files)."""
    with Session(state(client).engine) as s:
        mv = s.exec(select(func.count()).select_from(ModelVersion)).one()
        art = s.exec(select(func.count()).select_from(ModelArtifact)).one()
        blobs = s.exec(select(func.count()).select_from(Blob)).one()
    blob_dir = state(client).settings.resolved_blob_dir / "blobs"
    files = len(list(blob_dir.iterdir())) if blob_dir.exists() else 0
    return mv, art, blobs, files


NOTHING = (0, 0, 0, 0)


def test_upload_stores_version_and_deduplicated_blobs(
    client: TestClient, auth: dict[str, str], bundle_dir: Path
) -> None:
    r = client.post("/v1/bundles", content=tar_dir(bundle_dir), headers={**TAR, **auth})
    assert r.status_code == 201, r.text
    body = r.json()
    manifest_bytes = (bundle_dir / "manifest.json").read_bytes()
    import hashlib

    assert body["manifest_sha256"] == hashlib.sha256(manifest_bytes).hexdigest()
    assert body["name"] == "demo" and body["version"] == 1
    assert {a["target"] for a in body["artifacts"]} == {"cpu", "android-nnapi"}
    # cpu and android-nnapi share the same bytes: one artifact blob plus the manifest.
    assert counts(client) == (1, 2, 2, 2)


def test_same_version_identical_is_200(client: TestClient, auth: dict[str, str], bundle_dir: Path) -> None:
    body = tar_dir(bundle_dir)
    first = post(client, body, auth)
    again = post(client, body, auth)
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json() == first.json()
    assert counts(client) == (1, 2, 2, 2)


def test_same_version_different_content_is_409(
    client: TestClient, auth: dict[str, str], bundle_factory: Callable[..., Path]
) -> None:
    assert post(client, tar_dir(bundle_factory(seed=1)), auth).status_code == 201
    before = counts(client)
    r = post(client, tar_dir(bundle_factory(seed=2)), auth)
    assert r.status_code == 409
    assert r.json()["code"] == "version_exists"
    # The rejected upload's artifact was never written: the conflict is found first.
    assert counts(client) == before


def test_real_packager_bundle_is_accepted(
    client: TestClient, auth: dict[str, str], make_bundle: Callable[..., Path]
) -> None:
    bundle = make_bundle(1, targets=("cpu",))
    r = post(client, tar_dir(bundle), auth)
    assert r.status_code == 201, r.text


# --------------------------------------------------------------------------- attacks


def test_no_token_is_401(client: TestClient, bundle_dir: Path) -> None:
    r = client.post("/v1/bundles", content=tar_dir(bundle_dir), headers=TAR)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json() == {"detail": "missing Authorization: Bearer token", "code": "missing_token"}
    assert counts(client) == NOTHING


def test_wrong_scope_is_403(client: TestClient, make_token: Callable[..., str], bundle_dir: Path) -> None:
    token = make_token("publisher", scopes=("release",))
    r = post(client, tar_dir(bundle_dir), {"Authorization": f"Bearer {token}"})
    assert r.status_code == 403
    assert r.json()["code"] == "missing_scope"
    assert counts(client) == NOTHING


def test_revoked_token_is_401(
    client: TestClient, make_token: Callable[..., str], bundle_dir: Path, db_session: Session
) -> None:
    from sync_service import crud

    token = make_token("publisher", scopes=("publish",))
    row = crud.get_token(session=db_session, plain=token)
    assert row is not None and row.id is not None
    crud.revoke_token(session=db_session, token_id=row.id)
    db_session.commit()
    r = post(client, tar_dir(bundle_dir), {"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert r.json()["code"] == "invalid_token"
    assert counts(client) == NOTHING


def test_enrollment_token_cannot_publish(client: TestClient, enrollment_token: str, bundle_dir: Path) -> None:
    r = post(client, tar_dir(bundle_dir), {"Authorization": f"Bearer {enrollment_token}"})
    assert r.status_code == 403
    assert counts(client) == NOTHING


@pytest.mark.parametrize(
    ("bad_path", "code"),
    [
        ("../x.onnx", "path_outside_bundle"),
        ("/etc/passwd", "path_outside_bundle"),
        ("sub/x.onnx", "path_outside_bundle"),
    ],
)
def test_manifest_path_outside_bundle_is_400(
    client: TestClient,
    auth: dict[str, str],
    publisher_keys: list[Ed25519PrivateKey],
    bad_path: str,
    code: str,
) -> None:
    data = tiny_onnx(0)
    signed = manifest_signed("demo", 1, {"cpu": data})
    signed["artifacts"][0]["path"] = bad_path
    manifest = json.dumps(sign(signed, publisher_keys)).encode()
    r = post(client, tar_bytes([("manifest.json", manifest), ("x.onnx", data)]), auth)
    assert r.status_code == 400
    assert r.json()["code"] == code
    assert bad_path in r.json()["detail"]
    assert counts(client) == NOTHING


@pytest.mark.parametrize("member", ["../manifest.json", "/abs.onnx", "dir/x.onnx"])
def test_tar_member_outside_bundle_is_400(
    client: TestClient, auth: dict[str, str], bundle_dir: Path, member: str
) -> None:
    members = [(p.name, p.read_bytes()) for p in sorted(bundle_dir.iterdir())]
    r = post(client, tar_bytes([*members, (member, b"x")]), auth)
    assert r.status_code == 400
    assert r.json()["code"] == "path_outside_bundle"
    assert counts(client) == NOTHING


@pytest.mark.parametrize(
    ("kind", "code"),
    [(kind, "bad_member_type") for kind in (b"1", b"2", b"3", b"5", b"6", tarfile.GNUTYPE_SPARSE)],
)
def test_links_dirs_devices_are_400(client: TestClient, auth: dict[str, str], kind: bytes, code: str) -> None:
    r = post(client, tar_bytes([("evil", b"")], kind=kind), auth)
    assert r.status_code == 400
    assert r.json()["code"] == code
    assert counts(client) == NOTHING


def test_duplicate_member_is_400(client: TestClient, auth: dict[str, str], bundle_dir: Path) -> None:
    members = [(p.name, p.read_bytes()) for p in sorted(bundle_dir.iterdir())]
    r = post(client, tar_bytes([*members, members[0]]), auth)
    assert r.status_code == 400
    assert r.json()["code"] == "duplicate_member"
    assert counts(client) == NOTHING


def test_oversized_upload_is_413_by_content_length(client: TestClient, auth: dict[str, str]) -> None:
    cap = state(client).settings.upload_max_bytes
    r = post(client, b"\0" * (cap + 1), auth)
    assert r.status_code == 413
    assert r.json()["code"] == "payload_too_large"
    assert counts(client) == NOTHING


def test_oversized_chunked_upload_is_413_while_streaming(client: TestClient, auth: dict[str, str]) -> None:
    cap = state(client).settings.upload_max_bytes
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(cap // 65536 + 2):
            sent += 65536
            yield b"\0" * 65536

    r = client.post("/v1/bundles", content=body(), headers={**TAR, **auth})
    assert r.status_code == 413
    assert "Content-Length" not in r.request.headers
    assert counts(client) == NOTHING
    uploads = state(client).settings.data_dir / "uploads"
    assert list(uploads.iterdir()) == []  # the temporary file is gone


def test_truncated_tar_is_400(
    client: TestClient, auth: dict[str, str], bundle_factory: Callable[..., Path]
) -> None:
    body = tar_dir(bundle_factory(weights=20_000))
    r = post(client, body[: len(body) // 2], auth)
    assert r.status_code == 400
    assert r.json()["code"] in {"bad_tar", "truncated_tar"}
    assert counts(client) == NOTHING


@pytest.mark.parametrize(
    "body", [b"", b"garbage" * 100, b'{"signed": {}}', b"\x1f\x8b\x08\x00" + b"\0" * 600]
)
def test_garbage_body_is_400(client: TestClient, auth: dict[str, str], body: bytes) -> None:
    r = post(client, body, auth)
    assert r.status_code == 400
    assert r.json()["code"] == "bad_tar"
    assert counts(client) == NOTHING


def test_garbage_manifest_json_is_422(client: TestClient, auth: dict[str, str]) -> None:
    r = post(client, tar_bytes([("manifest.json", b"{not json")]), auth)
    assert r.status_code == 422
    assert r.json()["code"] == "malformed_manifest"
    wrong_type = b'{"signed": {"_type": "root"}, "signatures": []}'
    r = post(client, tar_bytes([("manifest.json", wrong_type)]), auth)
    assert r.status_code == 422
    assert r.json()["code"] == "wrong_type"
    assert counts(client) == NOTHING


def test_tampered_artifact_is_400(client: TestClient, auth: dict[str, str], bundle_dir: Path) -> None:
    artifact = next(p for p in bundle_dir.iterdir() if p.suffix == ".onnx")
    data = bytearray(artifact.read_bytes())
    data[-1] ^= 0xFF
    artifact.write_bytes(bytes(data))
    r = post(client, tar_dir(bundle_dir), auth)
    assert r.status_code == 400
    assert r.json()["code"] == "hash_mismatch"
    assert counts(client) == NOTHING


def test_missing_and_extra_files_are_400(client: TestClient, auth: dict[str, str], bundle_dir: Path) -> None:
    extra = bundle_dir / "notes.txt"
    extra.write_text("hello")
    r = post(client, tar_dir(bundle_dir), auth)
    assert r.status_code == 400
    assert r.json()["code"] == "unexpected_file"
    extra.unlink()
    next(p for p in bundle_dir.iterdir() if p.suffix == ".onnx").unlink()
    r = post(client, tar_dir(bundle_dir), auth)
    assert r.status_code == 400
    assert r.json()["code"] == "missing_file"
    assert counts(client) == NOTHING


def test_manifest_signed_by_key_outside_publisher_role_is_403(
    client: TestClient,
    auth: dict[str, str],
    bundle_factory: Callable[..., Path],
    service_keys_dir: Path,
) -> None:
    from packager.keys import load_private_key

    index_key = load_private_key(service_keys_dir / "index.key")  # a real key, wrong role
    r = post(client, tar_dir(bundle_factory(keys=[index_key])), auth)
    assert r.status_code == 403
    assert r.json()["code"] == "unknown_key"
    assert counts(client) == NOTHING


def test_manifest_with_forged_signature_is_403(
    client: TestClient, auth: dict[str, str], bundle_dir: Path
) -> None:
    path = bundle_dir / "manifest.json"
    env = json.loads(path.read_text())
    env["signed"]["version"] = 2  # changed after signing
    path.write_text(json.dumps(env))
    r = post(client, tar_dir(bundle_dir), auth)
    assert r.status_code == 403
    assert r.json()["code"] == "bad_signature"
    assert counts(client) == NOTHING


def test_unsigned_manifest_is_403_untrusted(
    client: TestClient, auth: dict[str, str], bundle_dir: Path
) -> None:
    path = bundle_dir / "manifest.json"
    env = json.loads(path.read_text())
    env["signatures"] = []
    path.write_text(json.dumps(env))
    r = post(client, tar_dir(bundle_dir), auth)
    assert r.status_code == 403
    assert r.json()["code"] == "untrusted_signature"
    assert counts(client) == NOTHING


def test_upload_over_real_http(
    live_server: str, auth: dict[str, str], bundle_dir: Path, tmp_path: Path
) -> None:
    shutil.copytree(bundle_dir, tmp_path / "copy")
    r = httpx.post(f"{live_server}/v1/bundles", content=tar_dir(tmp_path / "copy"), headers={**TAR, **auth})
    assert r.status_code == 201, r.text


class _FailingSecondPut:
    """Storage that dies after the first object is written: the window between blob
    writes and the database commit, where a killed server would stop."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.puts = 0

    def put(self, key: str, source: Path) -> None:
        from sync_service.storage import StorageError

        self.puts += 1
        if self.puts == 2:
            raise StorageError("disk vanished")
        self.inner.put(key, source)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_failure_between_blob_writes_and_commit_leaves_no_version(
    client: TestClient, auth: dict[str, str], bundle_dir: Path
) -> None:
    real = state(client).storage
    state(client).storage = _FailingSecondPut(real)
    r = post(client, tar_dir(bundle_dir), auth)
    assert r.status_code == 503 and r.json()["code"] == "storage_unavailable"
    mv, art, rows, files = counts(client)
    assert (mv, art, rows) == (0, 0, 0)  # nothing visible
    assert files == 1  # one orphan blob: content-addressed, harmless
    state(client).storage = real
    again = post(client, tar_dir(bundle_dir), auth)
    assert again.status_code == 201  # the orphan is simply reused
    assert counts(client) == (1, 2, 2, 2)


def test_stale_upload_directories_are_cleaned(tmp_path: Path) -> None:
    import os

    from sync_service.storage.sweep import clean_stale_uploads

    old, fresh = tmp_path / "bundle-old", tmp_path / "bundle-new"
    old.mkdir()
    fresh.mkdir()
    os.utime(old, (0, 0))
    assert clean_stale_uploads(tmp_path) == 1
    assert not old.exists() and fresh.exists()


@pytest.mark.parametrize("same", [True, False], ids=["identical", "conflicting"])
def test_concurrent_uploads_of_one_version(
    live_server: str,
    auth: dict[str, str],
    bundle_factory: Callable[..., Path],
    client: TestClient,
    same: bool,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    bodies = [tar_dir(bundle_factory(seed=1)), tar_dir(bundle_factory(seed=1 if same else 2))]
    if same:
        bodies[1] = bodies[0]

    def upload(body: bytes) -> int:
        return httpx.post(
            f"{live_server}/v1/bundles", content=body, headers={**TAR, **auth}, timeout=30
        ).status_code

    with ThreadPoolExecutor(2) as pool:
        codes = sorted(pool.map(upload, bodies))
    assert codes == ([200, 201] if same else [201, 409])
    assert counts(client)[:2] == (1, 2)
