"""The service's trust material: root rotation without a restart, the index key checked
against the root, encrypted index keys."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from packager.keys import load_private_key, rotate, save_keypair
from packager.manifest import keyid_of
from sync_service.core.config import Settings
from sync_service.errors import ServiceConfigError
from sync_service.main import create_app
from tests.sync_service.bundle_factory import make_bundle, tar_dir


@pytest.fixture
def own_keys(service_keys_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the keys (the shared one must not be rotated)."""
    d = tmp_path / "keys"
    shutil.copytree(service_keys_dir, d)
    return d


def test_publisher_rotation_applies_without_restart(
    settings: Settings, own_keys: Path, tmp_path: Path, make_token: Callable[..., str]
) -> None:
    app = create_app(
        settings.model_copy(
            update={"root_path": own_keys / "root.json", "index_key_path": own_keys / "index.key"}
        )
    )
    with TestClient(app) as client:
        # make_token writes through the `app` fixture: the same database as this app.
        auth = {"Authorization": f"Bearer {make_token('publisher')}"}
        old_key = load_private_key(own_keys / "publisher.key")
        assert client.get("/v1/root/2.json").status_code == 404
        rotate(own_keys, "publisher", revoke=[keyid_of(old_key.public_key())])
        assert client.get("/v1/root/2.json").json()["signed"]["version"] == 2
        new_key = load_private_key(own_keys / "publisher.key")
        stale = make_bundle(tmp_path / "stale", [old_key], version=1)
        r = client.post("/v1/bundles", content=tar_dir(stale), headers=auth)
        assert r.status_code == 403 and r.json()["code"] == "unknown_key"
        fresh = make_bundle(tmp_path / "fresh", [new_key], version=1)
        assert client.post("/v1/bundles", content=tar_dir(fresh), headers=auth).status_code == 201
    app.state.engine.dispose()


def test_index_key_outside_the_index_role_is_refused(settings: Settings, own_keys: Path) -> None:
    with pytest.raises(ServiceConfigError, match="not in root v1's index role"):
        create_app(settings.model_copy(update={"index_key_path": own_keys / "publisher.key"}))


def test_encrypted_index_key_needs_its_passphrase(settings: Settings, own_keys: Path) -> None:
    from pydantic import SecretStr

    key = load_private_key(own_keys / "index.key")
    save_keypair(own_keys / "index.key", key, b"s3cret")
    locked = settings.model_copy(update={"index_key_path": own_keys / "index.key"})
    with pytest.raises(ServiceConfigError, match="encrypted"):
        create_app(locked)
    with pytest.raises(ServiceConfigError, match="wrong passphrase"):
        create_app(locked.model_copy(update={"index_key_passphrase": SecretStr("nope")}))
    app = create_app(locked.model_copy(update={"index_key_passphrase": SecretStr("s3cret")}))
    assert keyid_of(app.state.keys.index_key.public_key()) == keyid_of(key.public_key())
    app.state.engine.dispose()


def test_missing_keys_are_a_clear_error(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(ServiceConfigError, match=r"--root KEYS/root\.json --index-key KEYS/index\.key"):
        create_app(settings.model_copy(update={"root_path": None}))
    with pytest.raises(ServiceConfigError, match="file not found"):
        create_app(settings.model_copy(update={"root_path": tmp_path / "nope.json"}))
