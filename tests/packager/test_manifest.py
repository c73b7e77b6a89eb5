"""Signing and every verification failure of packager/manifest.py, one test per attack."""

from __future__ import annotations

import copy
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from packager.errors import (
    BadSignatureError,
    FormatError,
    ThresholdError,
    UnknownKeyError,
    WrongTypeError,
)
from packager.keys import build_root_signed
from packager.manifest import (
    IndexEntry,
    Root,
    canonical_bytes,
    expiry_in,
    format_time,
    keyid_of,
    parse_time,
    sign,
    verify_index,
    verify_manifest,
    verify_root_self,
    verify_root_signed_by,
)
from packager.rollout import pick_entry, rollout_bucket

SHA = "ab" * 32


class Keys:
    """In-memory keys for every role: 1 root, 3 publisher (threshold 2), 1 index."""

    def __init__(self, publishers: int = 3, publisher_threshold: int = 2) -> None:
        self.root = [Ed25519PrivateKey.generate()]
        self.publisher = [Ed25519PrivateKey.generate() for _ in range(publishers)]
        self.index = [Ed25519PrivateKey.generate()]
        self.thresholds = {"root": 1, "publisher": publisher_threshold, "index": 1}

    def root_signed(self, version: int = 1) -> dict[str, Any]:
        return build_root_signed(
            version,
            {r: [k.public_key() for k in getattr(self, r)] for r in ("root", "publisher", "index")},
            self.thresholds,
        )

    def trusted_root(self) -> Root:
        return verify_root_self(sign(self.root_signed(), self.root))


def manifest_signed(version: int = 1) -> dict[str, Any]:
    tolerance = {"score_atol": 1e-5, "max_label_mismatches": 0}
    return {
        "_type": "model-manifest",
        "spec_version": "1.0",
        "name": "fleet-iforest",
        "version": version,
        "created": "2026-01-01T00:00:00Z",
        "model": {
            "family": "isolation_forest",
            "framework": "scikit-learn",
            "framework_version": "1.9",
            "features": [{"name": "a"}, {"name": "b"}],
            "input": {"name": "input", "dtype": "float32", "shape": [None, 2]},
            "outputs": [
                {"name": "label", "dtype": "int64", "shape": [None]},
                {"name": "score", "dtype": "float32", "shape": [None]},
            ],
            "threshold": 0.0,
        },
        "artifacts": [
            {
                "target": "cpu",
                "path": f"{SHA}.ort",
                "sha256": SHA,
                "length": 10,
                "precision": "fp32",
                "ort_version": "1.24.4",
                "optimization_style": "Fixed",
                "input_shape": [None, 2],
                "quantization": {"applied": False, "reason": "tree ensemble"},
                "ep_plan": {"providers": ["CPUExecutionProvider"], "cpu_recommended": True, "summary": "CPU"},
                "parity": {
                    "rows": 10, "label_agreement": 1.0, "max_abs_score_diff": 0.0,
                    "mean_abs_score_diff": 0.0, "spearman": 1.0,
                },
                "golden_tolerance": tolerance,
            }
        ],
        "golden": {"inputs": [[1.0, 2.0]], "label": [1], "score": [0.1]},
    }


def index_signed(version: int = 1, expires: str | None = None) -> dict[str, Any]:
    return {
        "_type": "channel-index",
        "spec_version": "1.0",
        "fleet": "f",
        "channel": "stable",
        "version": version,
        "expires": expires or expiry_in(timedelta(days=3)),
        "models": {
            "fleet-iforest": [
                {
                    "model": "fleet-iforest",
                    "version": 1,
                    "manifest": {"path": f"blobs/{SHA}", "length": 100, "sha256": SHA},
                    "rollout": {"percent": 100, "salt": "s"},
                }
            ]
        },
    }


@pytest.fixture
def keys() -> Keys:
    return Keys()


# ------------------------------------------------------------------ canonical bytes, envelope


def test_canonical_bytes_sort_keys_and_drop_whitespace() -> None:
    assert canonical_bytes({"b": 1, "a": [True, None, "é"]}) == b'{"a":[true,null,"\xc3\xa9"],"b":1}'


def test_canonical_bytes_refuse_non_json_values() -> None:
    with pytest.raises(FormatError):
        canonical_bytes({"a": float("nan")})


def test_envelope_shape_and_keyid(keys: Keys) -> None:
    env = sign(manifest_signed(), keys.publisher[:2])
    assert set(env) == {"signed", "signatures"}
    raw = keys.publisher[0].public_key().public_bytes_raw()
    assert env["signatures"][0]["keyid"] == hashlib.sha256(raw).hexdigest()
    keys.publisher[0].public_key().verify(
        bytes.fromhex(env["signatures"][0]["sig"]), canonical_bytes(env["signed"])
    )


def test_times_round_trip_whole_seconds_utc() -> None:
    moment = datetime(2026, 3, 4, 5, 6, 7, 890, tzinfo=UTC)
    assert format_time(moment) == "2026-03-04T05:06:07Z"
    assert parse_time("2026-03-04T05:06:07Z") == moment.replace(microsecond=0)
    with pytest.raises(FormatError):
        parse_time("2026-03-04T05:06:07+00:00")


# ------------------------------------------------------------------ manifest


def test_manifest_meeting_threshold_verifies(keys: Keys) -> None:
    m = verify_manifest(sign(manifest_signed(), keys.publisher[:2]), keys.trusted_root())
    assert (m.name, m.version, m.artifacts[0].target) == ("fleet-iforest", 1, "cpu")


def test_tampered_signed_field_is_bad_signature(keys: Keys) -> None:
    env = sign(manifest_signed(), keys.publisher[:2])
    env["signed"]["artifacts"][0]["sha256"] = "cd" * 32
    with pytest.raises(BadSignatureError):
        verify_manifest(env, keys.trusted_root())


def test_unknown_added_field_is_covered_by_signature(keys: Keys) -> None:
    env = sign({**manifest_signed(), "future_field": 1}, keys.publisher[:2])
    assert verify_manifest(copy.deepcopy(env), keys.trusted_root()).name == "fleet-iforest"
    env["signed"]["future_field"] = 2
    with pytest.raises(BadSignatureError):
        verify_manifest(env, keys.trusted_root())


def test_wrong_key_index_key_signing_manifest_is_unknown_key(keys: Keys) -> None:
    with pytest.raises(UnknownKeyError):
        verify_manifest(sign(manifest_signed(), keys.index), keys.trusted_root())


def test_foreign_key_is_unknown_key(keys: Keys) -> None:
    with pytest.raises(UnknownKeyError):
        verify_manifest(sign(manifest_signed(), [Ed25519PrivateKey.generate()]), keys.trusted_root())


def test_one_of_two_of_three_publishers_is_below_threshold(keys: Keys) -> None:
    with pytest.raises(ThresholdError, match="1 valid signature"):
        verify_manifest(sign(manifest_signed(), keys.publisher[:1]), keys.trusted_root())


def test_same_key_twice_counts_once(keys: Keys) -> None:
    env = sign(manifest_signed(), [keys.publisher[0], keys.publisher[0]])
    with pytest.raises(ThresholdError):
        verify_manifest(env, keys.trusted_root())


def test_one_forged_signature_among_enough_valid_ones_still_verifies(keys: Keys) -> None:
    env = sign(manifest_signed(), keys.publisher)
    env["signatures"][2]["sig"] = "00" * 64
    assert verify_manifest(env, keys.trusted_root()).version == 1


def test_forged_signature_below_threshold_is_bad_signature(keys: Keys) -> None:
    env = sign(manifest_signed(), keys.publisher[:2])
    env["signatures"][1]["sig"] = "00" * 64
    with pytest.raises(BadSignatureError):
        verify_manifest(env, keys.trusted_root())


def test_wrong_type_is_refused(keys: Keys) -> None:
    with pytest.raises(WrongTypeError):
        verify_manifest(sign(index_signed(), keys.publisher[:2]), keys.trusted_root())


@pytest.mark.parametrize(
    "raw",
    [[], {"signed": {}}, {"signed": {"_type": "model-manifest"}, "signatures": [{"keyid": "x", "sig": "y"}]}],
)
def test_malformed_envelope_is_format_error(keys: Keys, raw: Any) -> None:
    with pytest.raises(FormatError):
        verify_manifest(raw, keys.trusted_root())


def test_malformed_manifest_is_format_error_naming_field(keys: Keys) -> None:
    signed = manifest_signed()
    signed["name"] = "Not Valid!"
    with pytest.raises(FormatError, match="name"):
        verify_manifest(sign(signed, keys.publisher[:2]), keys.trusted_root())


# ------------------------------------------------------------------ index


def test_index_verifies_and_picks_entry(keys: Keys) -> None:
    index = verify_index(sign(index_signed(), keys.index), keys.trusted_root())
    assert pick_entry(index.models["fleet-iforest"], "device-1") is not None


def test_verify_index_checks_signatures_only(keys: Keys) -> None:
    # Rollback and expiry are the device's checks 2.4, 2.5 (tests/device_sim/test_trust.py).
    env = sign(index_signed(version=3, expires="2020-01-01T00:00:00Z"), keys.index)
    assert verify_index(env, keys.trusted_root()).version == 3


def test_index_signed_by_publisher_is_unknown_key(keys: Keys) -> None:
    with pytest.raises(UnknownKeyError):
        verify_index(sign(index_signed(), keys.publisher), keys.trusted_root())


# ------------------------------------------------------------------ root chain


def test_verify_root_self_checks_signatures_only(keys: Keys) -> None:
    # Root expiry is the device's check 1.6 (tests/device_sim/test_trust.py).
    signed = keys.root_signed()
    signed["expires"] = "2020-01-01T00:00:00Z"
    assert verify_root_self(sign(signed, keys.root)).version == 1


def test_root_rotation_good_chain(keys: Keys) -> None:
    trusted = keys.trusted_root()
    old_root = keys.root
    keys.root = [Ed25519PrivateKey.generate()]
    v2 = verify_root_signed_by(trusted, sign(keys.root_signed(2), old_root + keys.root))
    assert v2.version == 2
    assert v2.roles["root"].keyids == [keyid_of(keys.root[0].public_key())]
    # v3 needs v2's keys: the old root key alone no longer suffices.
    newer = [Ed25519PrivateKey.generate()]
    keys_v3 = keys.root
    keys.root = newer
    assert verify_root_signed_by(v2, sign(keys.root_signed(3), keys_v3 + newer)).version == 3
    with pytest.raises(UnknownKeyError):
        verify_root_signed_by(v2, sign(keys.root_signed(3), old_root + newer))


def test_root_signed_only_by_new_keys_is_refused(keys: Keys) -> None:
    trusted = keys.trusted_root()
    keys.root = [Ed25519PrivateKey.generate()]
    with pytest.raises(UnknownKeyError, match="by v1 keys"):
        verify_root_signed_by(trusted, sign(keys.root_signed(2), keys.root))


def test_root_signed_only_by_old_keys_is_refused(keys: Keys) -> None:
    trusted = keys.trusted_root()
    old = keys.root
    keys.root = [Ed25519PrivateKey.generate()]
    with pytest.raises(UnknownKeyError, match="its own keys"):
        verify_root_signed_by(trusted, sign(keys.root_signed(2), old))


# ------------------------------------------------------------------ rollout


def test_rollout_bucket_is_stable_and_spread() -> None:
    assert rollout_bucket("salt", "dev-1") == int(hashlib.sha256(b"salt:dev-1").hexdigest()[:8], 16) % 10000
    buckets = [rollout_bucket("salt", f"dev-{i}") for i in range(2000)]
    assert all(0 <= b < 10000 for b in buckets)
    share = sum(b < 2500 for b in buckets) / len(buckets)
    assert 0.2 < share < 0.3


def test_pick_entry_prefers_newest_entry_covering_device() -> None:
    def entry(version: int, percent: float) -> IndexEntry:
        return IndexEntry.model_validate(
            {
                "model": "m", "version": version,
                "manifest": {"path": f"blobs/{SHA}", "length": 1, "sha256": SHA},
                "rollout": {"percent": percent, "salt": "s"},
            }
        )

    assert pick_entry([entry(2, 0), entry(1, 100)], "d").version == 1  # type: ignore[union-attr]
    assert pick_entry([entry(2, 100), entry(1, 100)], "d").version == 2  # type: ignore[union-attr]
    assert pick_entry([entry(2, 0)], "d") is None
