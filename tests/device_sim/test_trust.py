"""device_sim.trust: every numbered check, one precise error each (docs/device.md)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device_sim import errors, trust
from packager.errors import (
    BadSignatureError,
    ExpiredError,
    RollbackError,
    ThresholdError,
    UnknownKeyError,
    WrongTypeError,
)
from packager.manifest import ChannelIndex, GoldenTolerance, GoldenVectors, IndexEntry
from tests.device_sim.forge import (
    Keys,
    doc_bytes,
    entry,
    index_doc,
    manifest_doc,
    ort_model,
    root_doc,
)


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture(scope="module")
def manifest_bytes(keys: Keys) -> bytes:
    return doc_bytes(manifest_doc(keys, "m", 2, {"cpu": ort_model(), "android-nnapi": ort_model()}))


def _index(keys: Keys, mbytes: bytes, **kw: Any) -> dict[str, Any]:
    return index_doc(keys, [entry("m", 2, mbytes)], **kw)


# ---------------------------------------------------------------- 1. root


def test_1_1_trusted_root_must_be_self_signed(keys: Keys) -> None:
    doc = root_doc(keys)
    assert trust.trusted_root(doc).version == 1
    doc["signed"]["expires"] = "2099-01-01T00:00:00Z"
    with pytest.raises(BadSignatureError):
        trust.trusted_root(doc)


def test_1_2_to_1_4_root_rotation_good_chain(keys: Keys) -> None:
    v1 = trust.trusted_root(root_doc(keys))
    new = Keys(root=[Ed25519PrivateKey.generate()], publisher=keys.publisher, index=keys.index)
    v2 = trust.next_root(v1, root_doc(new, 2, signers=keys.root + new.root))
    assert v2.version == 2
    assert trust.final_root(v2) is v2


def test_1_2_root_must_be_next_version(keys: Keys) -> None:
    v1 = trust.trusted_root(root_doc(keys))
    with pytest.raises(errors.RootChainError, match="v3 when asked for v2"):
        trust.next_root(v1, root_doc(keys, 3))
    with pytest.raises(errors.RootChainError, match="more than"):
        trust.next_root(v1, root_doc(keys, 2), steps=trust.MAX_ROOT_STEPS + 1)


def test_1_2_root_replay_and_rollback_refused(keys: Keys) -> None:
    # Genuine roots, properly signed: only the version rule refuses them.
    v1 = trust.trusted_root(root_doc(keys))
    v2 = trust.next_root(v1, root_doc(keys, 2))
    with pytest.raises(errors.RootChainError, match="v1 when asked for v2"):
        trust.next_root(v1, root_doc(keys, 1))
    with pytest.raises(errors.RootChainError, match="v1 when asked for v3"):
        trust.next_root(v2, root_doc(keys, 1))
    with pytest.raises(errors.RootChainError, match="v2 when asked for v3"):
        trust.next_root(v2, root_doc(keys, 2))


def test_1_3_new_root_not_signed_by_old_keys(keys: Keys) -> None:
    v1 = trust.trusted_root(root_doc(keys))
    attacker = Keys()
    with pytest.raises(UnknownKeyError, match="by v1 keys"):
        trust.next_root(v1, root_doc(attacker, 2))


def test_1_4_new_root_not_signed_by_its_own_keys(keys: Keys) -> None:
    v1 = trust.trusted_root(root_doc(keys))
    new = Keys(root=[Ed25519PrivateKey.generate()])
    with pytest.raises(UnknownKeyError, match="its own keys"):
        trust.next_root(v1, root_doc(new, 2, signers=keys.root))


def test_1_6_final_root_expired(keys: Keys) -> None:
    root = trust.trusted_root(root_doc(keys, lifetime=timedelta(seconds=-5)))
    with pytest.raises(ExpiredError, match="root v1 expired"):
        trust.final_root(root)


# ---------------------------------------------------------------- 2. index


def _check(keys: Keys, doc: Any, trusted_version: int | None = None, **kw: Any) -> ChannelIndex:
    root = trust.trusted_root(root_doc(keys))
    args = {"fleet": "f1", "channel": "stable", "trusted_version": trusted_version} | kw
    return trust.check_index(doc, root, **args)


def test_2_index_ok(keys: Keys, manifest_bytes: bytes) -> None:
    index = _check(keys, _index(keys, manifest_bytes, version=4), trusted_version=4)
    assert index.version == 4 and index.models["m"][0].version == 2


def test_2_1_wrong_type(keys: Keys, manifest_bytes: bytes) -> None:
    with pytest.raises(WrongTypeError):
        _check(keys, root_doc(keys))


def test_2_2_index_signed_by_wrong_key(keys: Keys, manifest_bytes: bytes) -> None:
    with pytest.raises(UnknownKeyError):
        _check(keys, _index(keys, manifest_bytes, signers=keys.publisher))


def test_2_2_index_tampered(keys: Keys, manifest_bytes: bytes) -> None:
    doc = _index(keys, manifest_bytes)
    doc["signed"]["models"]["m"][0]["rollout"]["percent"] = 50.0
    with pytest.raises(BadSignatureError):
        _check(keys, doc)


def test_2_2_index_below_threshold() -> None:
    keys = Keys(index=[Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()],
                thresholds={"root": 1, "publisher": 1, "index": 2})
    doc = index_doc(keys, [], signers=keys.index[:1])
    with pytest.raises(ThresholdError, match="1 valid signature"):
        _check(keys, doc)
    assert _check(keys, index_doc(keys, [])).version == 1


def test_2_3_index_for_another_channel(keys: Keys, manifest_bytes: bytes) -> None:
    with pytest.raises(errors.WrongChannelError, match="f1/beta"):
        _check(keys, _index(keys, manifest_bytes, channel="beta"))


def test_2_4_index_rollback_even_when_expired(keys: Keys, manifest_bytes: bytes) -> None:
    with pytest.raises(RollbackError, match="v3 is older than trusted v4"):
        _check(keys, _index(keys, manifest_bytes, version=3), trusted_version=4)
    expired = _index(keys, manifest_bytes, version=3, lifetime=timedelta(seconds=-1))
    with pytest.raises(RollbackError):
        _check(keys, expired, trusted_version=4)


def test_2_5_expired_index_is_stale_and_carries_the_index(keys: Keys, manifest_bytes: bytes) -> None:
    with pytest.raises(errors.StaleIndexError) as info:
        _check(keys, _index(keys, manifest_bytes, version=7, lifetime=timedelta(seconds=-1)))
    assert isinstance(info.value, ExpiredError)
    assert info.value.index.version == 7


def test_2_6_wanted_entries_follow_bucket_installed_and_failed(keys: Keys, manifest_bytes: bytes) -> None:
    doc = index_doc(keys, [entry("a", 3, manifest_bytes, percent=0.0), entry("a", 2, manifest_bytes),
                           entry("b", 5, manifest_bytes), entry("c", 1, manifest_bytes)])
    index = _check(keys, doc)
    picked = trust.wanted_entries(index, "dev-1", installed={"b": 5}, failed={"c": {1}})
    assert [(e.model, e.version) for e in picked] == [("a", 2)]
    # a device that took a since-halted v3 keeps it when the index falls back to v2
    assert trust.wanted_entries(index, "dev-1", installed={"a": 3, "b": 5}, failed={"c": {1}}) == []


# ---------------------------------------------------------------- 3. manifest


def _entry(mbytes: bytes, name: str = "m", version: int = 2) -> IndexEntry:
    return IndexEntry.model_validate(entry(name, version, mbytes))


def test_3_manifest_ok(keys: Keys, manifest_bytes: bytes) -> None:
    root = trust.trusted_root(root_doc(keys))
    m = trust.check_manifest(manifest_bytes, root, _entry(manifest_bytes), installed_version=1)
    assert (m.name, m.version) == ("m", 2)


@pytest.mark.parametrize("change", ["extra byte", "same length other bytes"])
def test_3_1_mix_and_match_bytes(keys: Keys, manifest_bytes: bytes, change: str) -> None:
    root = trust.trusted_root(root_doc(keys))
    data = manifest_bytes + b" " if change == "extra byte" else manifest_bytes.replace(b'"m"', b'"n"', 1)
    with pytest.raises(errors.MixAndMatchError):
        trust.check_manifest(data, root, _entry(manifest_bytes), None)


def test_3_3_manifest_signed_outside_publisher_role(keys: Keys) -> None:
    root = trust.trusted_root(root_doc(keys))
    data = doc_bytes(manifest_doc(keys, "m", 2, {"cpu": ort_model()}, signers=keys.index))
    with pytest.raises(UnknownKeyError):
        trust.check_manifest(data, root, _entry(data), None)


def test_3_3_manifest_tampered(keys: Keys, manifest_bytes: bytes) -> None:
    root = trust.trusted_root(root_doc(keys))
    data = manifest_bytes.replace(b'"threshold": 0.0', b'"threshold": 9.0')
    assert data != manifest_bytes
    with pytest.raises(BadSignatureError):
        trust.check_manifest(data, root, _entry(data), None)


def test_3_4_manifest_not_the_entry_named(keys: Keys, manifest_bytes: bytes) -> None:
    root = trust.trusted_root(root_doc(keys))
    with pytest.raises(errors.MixAndMatchError, match="names m v3"):
        trust.check_manifest(manifest_bytes, root, _entry(manifest_bytes, version=3), None)


def test_3_5_model_version_rollback(keys: Keys, manifest_bytes: bytes) -> None:
    root = trust.trusted_root(root_doc(keys))
    with pytest.raises(errors.ModelRollbackError, match="older than installed v3"):
        trust.check_manifest(manifest_bytes, root, _entry(manifest_bytes), installed_version=3)


def test_3_6_3_7_artifact_selection(keys: Keys, manifest_bytes: bytes) -> None:
    root = trust.trusted_root(root_doc(keys))
    m = trust.check_manifest(manifest_bytes, root, _entry(manifest_bytes), None)
    assert trust.select_artifact(m, "cpu", "1.24.3").target == "cpu"
    with pytest.raises(errors.NoArtifactForTargetError, match="ios-coreml"):
        trust.select_artifact(m, "ios-coreml", "1.24.4")
    with pytest.raises(errors.RuntimeTooOldError, match=r"runs 1\.23\.2"):
        trust.select_artifact(m, "cpu", "1.23.2")


# ---------------------------------------------------------------- 4. artifact


def test_4_1_4_2_length_and_hash(keys: Keys, manifest_bytes: bytes) -> None:
    root = trust.trusted_root(root_doc(keys))
    art = trust.check_manifest(manifest_bytes, root, _entry(manifest_bytes), None).artifacts[0]
    data = ort_model()
    trust.check_artifact(data, art)
    trust.check_length_so_far(len(data), art.length)
    with pytest.raises(errors.LengthMismatchError, match="more than the declared"):
        trust.check_length_so_far(len(data) + 1, art.length)
    with pytest.raises(errors.LengthMismatchError):
        trust.check_artifact(data[:-1], art)
    flipped = bytes([data[0] ^ 1]) + data[1:]
    with pytest.raises(errors.HashMismatchError):
        trust.check_artifact(flipped, art)


def test_4_4_golden_vectors() -> None:
    golden = GoldenVectors(inputs=[[0.0], [1.0]], label=[1, -1], score=[0.5, -0.5])
    tol = GoldenTolerance(score_atol=0.01, max_label_mismatches=0)
    assert trust.check_golden([1, -1], [0.505, -0.5], golden, tol) == pytest.approx(0.005)
    with pytest.raises(errors.GoldenVectorError, match="1 label mismatches"):
        trust.check_golden([1, 1], [0.5, -0.5], golden, tol)
    with pytest.raises(errors.GoldenVectorError, match="exceeds tolerance"):
        trust.check_golden([1, -1], [0.6, -0.5], golden, tol)
    with pytest.raises(errors.GoldenVectorError, match="NaN"):
        trust.check_golden([1, -1], [float("nan"), -0.5], golden, tol)
    with pytest.raises(errors.GoldenVectorError, match="2 inputs but 1 labels"):
        trust.check_golden([1], [0.5], golden, tol)


# ---------------------------------------------------------------- the documented tree


def test_docs_list_every_error_class_with_its_code() -> None:
    """The TypeScript client copies names and codes from docs/device.md: keep them in step."""
    text = (Path(__file__).parents[2] / "docs" / "device.md").read_text()
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, Exception)]
    assert len([c for c in classes if c.__module__ == errors.__name__]) == 21
    assert len(classes) == 31  # with packager.errors' ModelSyncError and verification leaves
    for cls in classes:
        line = re.search(rf"(?:── |^){cls.__name__}\s.*\s(\w+)$", text, re.M)
        assert line, cls.__name__
        assert line.group(1) == errors.error_code(cls("x") if cls is not errors.StaleIndexError
                                                 else cls("x", None))  # type: ignore[arg-type]
    assert errors.error_code(UnknownKeyError("x")) == "unknown_key"


def test_typescript_error_tree_has_the_same_names_and_codes() -> None:
    """Every class of the TypeScript client's errors.ts is one of the device's, same code."""
    ts = (Path(__file__).parents[2] / "react-native-stub" / "src" / "core" / "errors.ts").read_text()
    found = re.findall(r'class (\w+) extends \w+ \{.*?readonly code(?:: string)? = "(\w+)"', ts, re.S)
    assert len(found) == 25
    for name, code in found:
        cls = getattr(errors, name)
        assert cls.code == code, name
