"""verify_bundle against tampered bundles, one test per attack, each on a fresh copy."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from packager.cli import main
from packager.errors import BadSignatureError, BundleError, FormatError, UnknownKeyError
from packager.keys import load_private_key, load_root
from packager.manifest import Root, sha256_hex, sign
from packager.verify import verify_bundle


@pytest.fixture
def bundle(small_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(small_bundle, tmp_path / "bundle"))


@pytest.fixture
def root(keys_dir: Path) -> Root:
    return load_root(keys_dir / "root.json")


def _signed(bundle: Path) -> dict[str, Any]:
    signed: dict[str, Any] = json.loads((bundle / "manifest.json").read_text())["signed"]
    return signed


def _resign(bundle: Path, keys_dir: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """What a holder of the publisher key could do: a validly signed, edited manifest."""
    signed = _signed(bundle)
    edit(signed)
    env = sign(signed, [load_private_key(keys_dir / "publisher.key")])
    (bundle / "manifest.json").write_text(json.dumps(env))


def _ort(bundle: Path, target: str = "cpu") -> Path:
    art = next(a for a in _signed(bundle)["artifacts"] if a["target"] == target)
    return bundle / str(art["path"])


def _replace_artifact(signed: dict[str, Any], bundle: Path, target: str, data: bytes) -> None:
    art = next(a for a in signed["artifacts"] if a["target"] == target)
    old = bundle / art["path"]
    sha = sha256_hex(data)
    if sum(a["path"] == art["path"] for a in signed["artifacts"]) == 1:
        old.unlink()
    (bundle / f"{sha}.ort").write_bytes(data)
    art.update(path=f"{sha}.ort", sha256=sha, length=len(data))


def test_untouched_copy_verifies(bundle: Path, root: Root) -> None:
    assert verify_bundle(bundle, root).manifest.version == 1


def test_byte_flipped_in_artifact(bundle: Path, root: Root) -> None:
    path = _ort(bundle)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"{path.name}: sha256"):
        verify_bundle(bundle, root)


def test_artifact_with_appended_byte(bundle: Path, root: Root) -> None:
    path = _ort(bundle)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(BundleError, match="length"):
        verify_bundle(bundle, root)


def test_extra_file(bundle: Path, root: Root) -> None:
    (bundle / "notes.txt").write_text("hi")
    with pytest.raises(BundleError, match=r"unexpected file 'notes\.txt'"):
        verify_bundle(bundle, root)


def test_renamed_file(bundle: Path, root: Root) -> None:
    path = _ort(bundle)
    path.rename(bundle / "model.ort")
    with pytest.raises(BundleError, match=f"missing file {path.name}"):
        verify_bundle(bundle, root)


def test_subdirectory(bundle: Path, root: Root) -> None:
    (bundle / "extra").mkdir()
    with pytest.raises(BundleError, match="unexpected entry 'extra'"):
        verify_bundle(bundle, root)


def test_artifact_replaced_by_symlink(bundle: Path, root: Root, tmp_path: Path) -> None:
    path = _ort(bundle)
    outside = tmp_path / "outside.ort"
    shutil.move(path, outside)
    path.symlink_to(outside)
    with pytest.raises(BundleError, match="unexpected link"):
        verify_bundle(bundle, root)


def test_manifest_edited(bundle: Path, root: Root) -> None:
    env = json.loads((bundle / "manifest.json").read_text())
    env["signed"]["artifacts"][0]["golden_tolerance"]["score_atol"] = 1.0
    (bundle / "manifest.json").write_text(json.dumps(env))
    with pytest.raises(BadSignatureError):
        verify_bundle(bundle, root)


def test_manifest_not_json(bundle: Path, root: Root) -> None:
    (bundle / "manifest.json").write_text("{")
    with pytest.raises(FormatError, match="not valid JSON"):
        verify_bundle(bundle, root)


def test_manifest_missing(bundle: Path, root: Root) -> None:
    (bundle / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"no manifest\.json"):
        verify_bundle(bundle, root)


def test_manifest_signed_by_stranger(bundle: Path, root: Root) -> None:
    env = sign(_signed(bundle), [Ed25519PrivateKey.generate()])
    (bundle / "manifest.json").write_text(json.dumps(env))
    with pytest.raises(UnknownKeyError):
        verify_bundle(bundle, root)


@pytest.mark.parametrize("path", ["../escape.ort", "sub/{sha}.ort", "{sha}.joblib", "{other}.ort"])
def test_path_tricks_in_signed_manifest(bundle: Path, root: Root, keys_dir: Path, path: str) -> None:
    def edit(signed: dict[str, Any]) -> None:
        art = signed["artifacts"][2]
        art["path"] = path.format(sha=art["sha256"], other="0" * 64)

    _resign(bundle, keys_dir, edit)
    with pytest.raises(BundleError, match=r"is not '<its sha256>\.ort'"):
        verify_bundle(bundle, root)


def test_signed_wrong_length(bundle: Path, root: Root, keys_dir: Path) -> None:
    _resign(bundle, keys_dir, lambda s: s["artifacts"][2].update(length=s["artifacts"][2]["length"] + 1))
    with pytest.raises(BundleError, match="length"):
        verify_bundle(bundle, root)


def test_golden_vectors_catch_a_different_model(
    bundle: Path, root: Root, keys_dir: Path, make_bundle: Callable[..., Path]
) -> None:
    """A correctly hashed and signed artifact of another model (v2, retrained) must not
    pass as this manifest's: the golden vectors are what catch it."""
    other = _ort(make_bundle(2)).read_bytes()
    _resign(bundle, keys_dir, lambda s: _replace_artifact(s, bundle, "cpu", other))
    verify_bundle(bundle, root, run_golden=False)  # hashes and signature are fine
    with pytest.raises(BundleError, match=r"cpu \(fp32.*golden vectors off by"):
        verify_bundle(bundle, root)


def test_golden_vectors_catch_a_tightened_tolerance(bundle: Path, root: Root, keys_dir: Path) -> None:
    def edit(signed: dict[str, Any]) -> None:
        art = signed["artifacts"][0]
        art["golden_tolerance"]["score_atol"] = 0.0
        signed["golden"]["score"] = [s + 1e-4 for s in signed["golden"]["score"]]

    _resign(bundle, keys_dir, edit)
    with pytest.raises(BundleError, match=r"android-nnapi.*tolerance is 0"):
        verify_bundle(bundle, root)


def test_golden_labels_flipped(bundle: Path, root: Root, keys_dir: Path) -> None:
    _resign(bundle, keys_dir, lambda s: s["golden"].update(label=[-v for v in s["golden"]["label"]]))
    with pytest.raises(BundleError, match="golden label"):
        verify_bundle(bundle, root)


def test_signed_garbage_artifact_is_refused_by_onnxruntime(bundle: Path, root: Root, keys_dir: Path) -> None:
    _resign(bundle, keys_dir, lambda s: _replace_artifact(s, bundle, "cpu", b"not an ort model" * 8))
    with pytest.raises(BundleError, match="onnxruntime cannot run it"):
        verify_bundle(bundle, root)


def test_verify_cli_prints_one_line_and_fails(
    bundle: Path, keys_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (bundle / "stray.bin").write_bytes(b"x")
    assert main(["verify", str(bundle), "--root", str(keys_dir / "root.json")]) == 3  # VERIFICATION
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unexpected file 'stray.bin'" in err
