"""Installing from an offline pack, against packs the real service exported: the same checks
as a network sync, a pack never moves a device backwards, reports wait for the next online
sync, and every attack on a pack is refused with the state unchanged (docs/offline.md;
python-tuf's one-test-per-attack shape). Real bundles, real SQLite, real onnxruntime."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import zstandard
from fastapi import FastAPI
from sqlmodel import Session

from device_sim import errors
from device_sim.device import Device
from device_sim.transfer import SyncConfig
from packager.cli import main as cli_main
from packager.errors import PackFormatError
from packager.offline_pack import MAGIC
from sync_service import crud
from tests.device_sim.service import FLEET, admin, make_token, publish_and_release, service_app

__all__ = ["admin", "service_app"]  # fixtures

MODEL = "fleet-iforest"


def export(admin: Callable[..., httpx.Response], out: Path, **body: Any) -> Path:
    r = admin("POST", f"/v1/fleets/{FLEET}/channels/stable/pack", json=body)
    assert r.status_code == 200, r.text
    out.write_bytes(r.content)
    return out


async def register(app: FastAPI, state: Path, keys_dir: Path, platform: str = "linux",
                   device_id: str | None = None) -> Device:
    """Enrolled at the depot, before going where there is no network."""
    enroll = make_token(app, "enrollment")
    root = json.loads((keys_dir / "root.json").read_text())
    return await Device.async_register(
        state, server="http://service.test", enroll_token=enroll, platform=platform, root_envelope=root,
        transport=httpx.ASGITransport(app=app), config=SyncConfig(deadline=60), device_id=device_id)


def snapshot(device: Device) -> dict[str, Any]:
    """What a refused pack must leave as it was: models, trust state, failures."""
    store = device.store
    ch = store.identity.channel
    return {
        "root": store.root_envelope()["signed"]["version"],
        "trusted": store.trusted_index_version(ch),
        "floor": store.pack_floor(ch),
        "models": {n: store.slot(n).model_dump() for n in store.model_names()},  # type: ignore[union-attr]
        "failed": store.failed(),
        "files": sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*")
                        if "queue" not in p.parts),
    }


@pytest.fixture
def pack_v1(service_app: FastAPI, admin: Callable[..., httpx.Response], make_bundle: Callable[..., Path],
            tmp_path: Path) -> Path:
    publish_and_release(admin, make_bundle(1))
    return export(admin, tmp_path / "site-v1.mspack")


async def test_a_device_installs_from_a_pack_offline_and_reports_when_back_online(
    service_app: FastAPI, admin: Callable[..., httpx.Response], pack_v1: Path, keys_dir: Path, tmp_path: Path,
) -> None:
    device = await register(service_app, tmp_path / "dev", keys_dir)
    result = device.install_pack(pack_v1)  # no transport is used: the device is offline
    assert [(o["model"], o["version"], o["outcome"]) for o in result.installed] == [(MODEL, 1, "installed")]
    slot = device.store.slot(MODEL)
    assert slot is not None and slot.current.version == 1 and device.store.intact(slot.current)
    queued = [e for _, e in device.store.queued()]
    installed = [e for e in queued if e["kind"] == "installed"]
    assert installed and installed[0]["data"]["source"] == "pack"
    assert installed[0]["data"]["pack_id"] == result.pack_id
    # the same pack again: nothing newer, nothing done
    again = device.install_pack(pack_v1)
    assert again.outcomes == [] and [s.reason for s in again.skipped] == ["not_newer"]
    # back online: the queued reports go out, the service counts the install and its source
    back = await device.async_sync()
    assert back.ok and back.reports_sent >= 1 and back.outcomes == []
    releases = admin("GET", f"/v1/releases?fleet={FLEET}&channel=stable").json()
    status = admin("GET", f"/v1/releases/{releases[0]['id']}/status").json()
    assert status["installs"] == 1 and status["installs_from_packs"] == 1, status
    detail = admin("GET", f"/v1/devices/{device.store.identity.device_id}").json()
    assert detail["installed"] == {MODEL: 1} and detail["installed_from_packs"] == {MODEL: 1}, detail


async def test_install_pack_cli_prints_what_it_did(
    service_app: FastAPI, pack_v1: Path, keys_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    await register(service_app, tmp_path / "dev", keys_dir)
    assert cli_main(["device", "install-pack", str(pack_v1), "--state", str(tmp_path / "dev"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["outcomes"][0]["outcome"] == "installed" and out["exit_code"] == 0
    assert cli_main(["pack", "inspect", str(pack_v1), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["fleet"] == FLEET and info["models"][0]["model"] == MODEL
    assert {a["target"] for a in info["models"][0]["artifacts"]} == {"android-nnapi", "ios-coreml", "cpu"}


# --------------------------------------------------------------------------- attacks


def _rewrite(src: Path, dst: Path, edit: Callable[[dict[str, Any], bytearray], None]) -> Path:
    """Re-assemble a pack with its header and member bytes edited (a tamperer's tool)."""
    data = src.read_bytes()
    (hlen,) = struct.unpack(">I", data[len(MAGIC):len(MAGIC) + 4])
    header = json.loads(data[len(MAGIC) + 4:len(MAGIC) + 4 + hlen])
    body = bytearray(data[len(MAGIC) + 4 + hlen:])
    edit(header, body)
    head = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    dst.write_bytes(MAGIC + struct.pack(">I", len(head)) + head + bytes(body))
    return dst


def _member_span(header: dict[str, Any], kind: str) -> tuple[int, int, dict[str, Any]]:
    offset = 0
    for m in header["members"]:
        if m["kind"] == kind:
            return offset, offset + m["stored_length"], m
        offset += m["stored_length"]
    raise AssertionError(kind)


async def _refused(device: Device, pack: Path, error: type[Exception]) -> Exception:
    before = snapshot(device)
    with pytest.raises(error) as caught:
        device.install_pack(pack)
    assert snapshot(device) == before
    return caught.value


async def test_truncated_pack_is_refused_with_state_unchanged(
    service_app: FastAPI, pack_v1: Path, keys_dir: Path, tmp_path: Path,
) -> None:
    device = await register(service_app, tmp_path / "dev", keys_dir)
    for cut in (5, 200, len(pack_v1.read_bytes()) - 1):
        short = tmp_path / f"cut-{cut}.mspack"
        short.write_bytes(pack_v1.read_bytes()[:cut])
        exc = await _refused(device, short, PackFormatError)
        assert exc.code == "pack_format"  # type: ignore[attr-defined]
    assert device.store.slot(MODEL) is None


async def test_tampered_artifact_is_refused_with_state_unchanged(
    service_app: FastAPI, pack_v1: Path, keys_dir: Path, tmp_path: Path,
) -> None:
    device = await register(service_app, tmp_path / "dev", keys_dir)

    def flip(header: dict[str, Any], body: bytearray) -> None:
        start, end, _ = _member_span(header, "artifact")
        body[(start + end) // 2] ^= 0x01

    await _refused(device, _rewrite(pack_v1, tmp_path / "flip.mspack", flip), PackFormatError)


async def test_tampered_artifact_with_a_rewritten_header_fails_its_manifest_hash(
    service_app: FastAPI, pack_v1: Path, keys_dir: Path, tmp_path: Path,
) -> None:
    """The header is not signed: fixing its listed sha256 gets past the container check and
    into check 4.2, where the manifest's hash refuses the bytes. Nothing is installed."""
    device = await register(service_app, tmp_path / "dev", keys_dir)

    def forge(header: dict[str, Any], body: bytearray) -> None:
        out = bytearray()
        offset = 0
        for m in header["members"]:
            stored = bytes(body[offset:offset + m["stored_length"]])
            offset += m["stored_length"]
            if m["kind"] == "artifact":
                plain = bytearray(zstandard.ZstdDecompressor().decompress(stored) if m["encoding"] == "zstd"
                                  else stored)
                plain[len(plain) // 2] ^= 0x01
                stored = bytes(plain)
                m.update(encoding="identity", length=len(stored), stored_length=len(stored),
                         sha256=hashlib.sha256(stored).hexdigest())
            out += stored
        body[:] = out

    forged = _rewrite(pack_v1, tmp_path / "forged.mspack", forge)
    result = device.install_pack(forged)
    failed = [o for o in result.outcomes if o["outcome"] == "failed"]
    assert failed and failed[0]["reason"] == "hash_mismatch"
    assert device.store.slot(MODEL) is None


async def test_stale_pack_is_refused_with_state_unchanged(
    service_app: FastAPI, pack_v1: Path, keys_dir: Path, tmp_path: Path,
) -> None:
    device = await register(service_app, tmp_path / "dev", keys_dir)
    device.now = lambda: datetime.now(UTC) + timedelta(days=31)  # the pack is valid 30 days
    exc = await _refused(device, pack_v1, errors.StalePackError)
    assert "expired" in str(exc)
    device.now = lambda: datetime.now(UTC) - timedelta(days=1)  # before it was made
    await _refused(device, pack_v1, errors.StalePackError)


async def test_pack_for_another_fleet_is_refused_with_state_unchanged(
    service_app: FastAPI, admin: Callable[..., httpx.Response], make_bundle: Callable[..., Path],
    pack_v1: Path, keys_dir: Path, tmp_path: Path,
) -> None:
    with Session(service_app.state.engine) as session:
        crud.create_fleet(session=session, name="plant")
        session.commit()
    r = admin("POST", "/v1/releases", json={"fleet": "plant", "channel": "stable", "model": MODEL,
                                             "version": 1, "percent": 100})
    assert r.status_code == 201, r.text
    r = admin("POST", "/v1/fleets/plant/channels/stable/pack", json={})
    other = tmp_path / "plant.mspack"
    other.write_bytes(r.content)
    device = await register(service_app, tmp_path / "dev", keys_dir)
    await _refused(device, other, errors.WrongChannelError)


async def test_pack_with_a_lower_version_is_refused_with_state_unchanged(
    service_app: FastAPI, admin: Callable[..., httpx.Response], make_bundle: Callable[..., Path],
    pack_v1: Path, keys_dir: Path, tmp_path: Path,
) -> None:
    device = await register(service_app, tmp_path / "dev", keys_dir)
    publish_and_release(admin, make_bundle(2))
    pack_v2 = export(admin, tmp_path / "site-v2.mspack")
    assert device.install_pack(pack_v2).installed[0]["version"] == 2
    exc = await _refused(device, pack_v1, errors.RollbackError)
    assert "older than trusted" in str(exc)
    slot = device.store.slot(MODEL)
    assert slot is not None and slot.current.version == 2


async def test_pack_signed_by_the_index_key_instead_of_the_offline_key_is_refused(
    service_app: FastAPI, pack_v1: Path, keys_dir: Path, tmp_path: Path,
) -> None:
    """An online index key cannot mint a pack: the snapshot needs the offline role."""
    from packager.keys import load_private_key
    from packager.manifest import sign

    device = await register(service_app, tmp_path / "dev", keys_dir)
    index_key = load_private_key(keys_dir / "index.key")

    def resign(header: dict[str, Any], body: bytearray) -> None:
        start, end, member = _member_span(header, "offline-index")
        env = json.loads(bytes(body[start:end]))
        new = json.dumps(sign(env["signed"], [index_key]), sort_keys=True).encode()
        body[start:end] = new
        member.update(length=len(new), stored_length=len(new), sha256=hashlib.sha256(new).hexdigest())

    await _refused(device, _rewrite(pack_v1, tmp_path / "resigned.mspack", resign), errors.UnknownKeyError)


async def test_the_network_cannot_undercut_a_pack(
    service_app: FastAPI, pack_v1: Path, keys_dir: Path, tmp_path: Path,
) -> None:
    """A pack's index version is a floor for the online index too (check 2.4 with P.2.3)."""
    device = await register(service_app, tmp_path / "dev", keys_dir)
    device.install_pack(pack_v1)
    floor = device.store.pack_floor("stable")
    assert floor is not None
    result = await device.async_sync()
    assert result.ok and result.index_version is not None and result.index_version >= floor
