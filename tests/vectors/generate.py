"""Write the cross-language test vectors (tests/vectors/*.json), deterministically.

    .venv/bin/python tests/vectors/generate.py            # rewrite tests/vectors/
    .venv/bin/python tests/vectors/generate.py --out DIR  # write elsewhere (determinism test)

Every key here is a TEST KEY derived from a public seed string: anyone can sign with it.
Never put one of them in a real root.

Ed25519 signatures are deterministic (RFC 8032), all times are fixed, and every file is
written with sorted keys, so running this twice gives identical bytes. Python
(tests/test_vectors.py) and TypeScript (react-native-stub/test/vectors.test.ts) both walk
``manifest.json`` and must reach the same verdict on every case.

A case file holds the inputs of one operation:

    verify_root_self   {document, now}                     root shipped in the app
    root_chain         {trusted, chain: [...], now}        walk v(N+1)… then final expiry
    verify_manifest    {root, document}
    verify_index       {root, document, trusted_version, now}

``expect`` in manifest.json is ``"ok"`` or the error class name the device reports
(packager/errors.py, device_sim/errors.py; react-native-stub/src/core/errors.ts): the
verdict of the device's trust checks (device_sim/trust.py, core/trust.ts), which every
case runs through. ``policy`` marks the cases whose verdict is the trust policy's (root
v(N+1) chain, rollback, expiry); the others are decided by structure and signatures
alone, and the schema layers (packager/manifest.py, core/documents.ts) must reach the
same verdict on them.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from packager.manifest import (
    SPEC_VERSION,
    canonical_bytes,
    keyid_of,
    public_raw,
    sha256_hex,
    sign,
)
from packager.rollout import rollout_bucket
from tests.vectors.generate_cohort import build as build_cohort
from tests.vectors.generate_shadow import build as build_shadow

HERE = Path(__file__).resolve().parent
NOTICE = (
    "TEST VECTORS ONLY. Every private key here is derived from a published seed string; "
    "anyone can sign with it. Never trust these keys in a real root."
)
NOW = "2026-03-01T00:00:00Z"
LATER = "2027-06-01T00:00:00Z"  # after every root expires
CREATED = "2026-01-01T00:00:00Z"
ROOT_EXPIRES = "2027-01-01T00:00:00Z"
INDEX_EXPIRES = "2026-03-08T00:00:00Z"
INDEX_EXPIRED = "2026-02-15T00:00:00Z"

KEY_NAMES = (
    "root-1", "root-2", "root-3", "root-4", "root-5",
    "publisher-1", "publisher-2", "publisher-3",
    "index-1", "index-2",
    "offline-1",
    "attacker-1", "attacker-2",
)


def seed_of(name: str) -> bytes:
    return hashlib.sha256(f"modelsync test vector key: {name}".encode()).digest()


KEYS: dict[str, Ed25519PrivateKey] = {
    n: Ed25519PrivateKey.from_private_bytes(seed_of(n)) for n in KEY_NAMES
}


def kid(name: str) -> str:
    return keyid_of(KEYS[name].public_key())


def signed_by(signed: dict[str, Any], *names: str) -> dict[str, Any]:
    return sign(signed, [KEYS[n] for n in names])


def root_signed(
    version: int,
    roles: dict[str, tuple[list[str], int]],
    expires: str = ROOT_EXPIRES,
) -> dict[str, Any]:
    keys: dict[str, Any] = {}
    role_doc: dict[str, Any] = {}
    for role, (names, threshold) in roles.items():
        for n in names:
            keys[kid(n)] = {
                "keytype": "ed25519",
                "scheme": "ed25519",
                "public": public_raw(KEYS[n].public_key()).hex(),
            }
        role_doc[role] = {"keyids": sorted(kid(n) for n in names), "threshold": threshold}
    return {
        "_type": "root",
        "spec_version": SPEC_VERSION,
        "version": version,
        "expires": expires,
        "keys": keys,
        "roles": role_doc,
    }


ROLES_V1 = {
    "root": (["root-1", "root-2", "root-3"], 2),
    "publisher": (["publisher-1", "publisher-2", "publisher-3"], 2),
    "index": (["index-1"], 1),
}
# v2 retires root-3 (say, a lost laptop) for root-4; v3 rotates the online index key.
ROLES_V2 = {**ROLES_V1, "root": (["root-1", "root-2", "root-4"], 2)}
ROLES_V3 = {**ROLES_V2, "index": (["index-2"], 1)}
# v4 names the offline role that signs a pack's snapshot (docs/architecture.md).
ROLES_V4 = {**ROLES_V3, "offline": (["offline-1"], 1)}


def fake_sha(label: str) -> str:
    return sha256_hex(label.encode())


def manifest_signed(version: int = 3) -> dict[str, Any]:
    """A valid model-manifest whose content exercises canonicalisation: non-ASCII text,
    floats RFC 8785 writes in exponent form (1e-7, 1e+21), -0.0, nested key order."""
    plan = {
        "providers": ["CPUExecutionProvider"],
        "analysis": [
            {
                "provider": "NNAPIExecutionProvider",
                "supported_nodes": 0,
                "total_nodes": 3,
                "partitions": 0,
                "recommended": False,
                "note": "TreeEnsembleRegressor is not an NNAPI operator",
            }
        ],
        "cpu_recommended": True,
        "summary": "tree ensemble: the CPU provider runs the whole graph",
    }
    artifacts = []
    for target, length in (("cpu", 40213), ("android-nnapi", 40377)):
        sha = fake_sha(f"artifact {target} v{version}")
        artifacts.append(
            {
                "target": target,
                "path": f"{sha}.ort",
                "sha256": sha,
                "length": length,
                "format": "ort",
                "precision": "fp32",
                "ort_version": "1.24.4",
                "optimization_style": "Fixed" if target == "cpu" else "Runtime",
                "input_shape": [None, 3],
                "quantization": {
                    "applied": False,
                    "method": None,
                    "reason": "tree ensemble: nothing for INT8 to quantize",
                },
                "ep_plan": plan,
                "parity": {
                    "rows": 60000,
                    "label_agreement": 1.0,
                    "max_abs_score_diff": 1e-7,
                    "mean_abs_score_diff": 1.5e-8,
                    "spearman": 0.9999999999999999,
                },
                "golden_tolerance": {"score_atol": 1e-5, "max_label_mismatches": 0},
                "compressed": {
                    "encoding": "zstd",
                    "level": 19,
                    "length": 9120,
                    "sha256": fake_sha(f"zstd {target} v{version}"),
                },
            }
        )
    return {
        "_type": "model-manifest",
        "spec_version": SPEC_VERSION,
        "name": "battery-anomaly",
        "version": version,
        "created": CREATED,
        "model": {
            "family": "isolation_forest",
            "framework": "scikit-learn",
            "framework_version": "1.5.2",
            "features": [
                {"name": "battery_temp_c", "dtype": "float32", "description": "Akku-Temperatur (°C)"},
                {"name": "cpu_load", "dtype": "float32", "description": "charge CPU — moyenne 1 min"},
                {"name": "net_errors", "dtype": "float32", "description": "網路錯誤 per hour 📶"},
            ],
            "input": {"name": "input", "dtype": "float32", "shape": [None, 3], "meaning": "features"},
            "outputs": [
                {"name": "label", "dtype": "int64", "shape": [None], "meaning": "-1 anomaly, 1 normal"},
                {"name": "score", "dtype": "float32", "shape": [None], "meaning": "decision_function"},
            ],
            "threshold": -0.0,
            "training_data_sha256": fake_sha("training data"),
            "description": "tab\tquote\" backslash\\ control\u001f line-sep\u2028 emoji 😀 \ufb33",
        },
        "artifacts": artifacts,
        "golden": {
            "inputs": [[31.5, 0.1, 0.0], [1e21, 1e-7, -0.0], [45.25, 0.875, 12.0]],
            "label": [1, -1, -1],
            "score": [0.0625, -0.3, -1.2e-5],
        },
        # Unknown to this version: signed, kept, ignored (forward compatibility).
        "x-extension": {"z": 1, "a": {"b": [3, 2, 1], "A": True}, "é": None, "e": 1},
    }


def manifest_bytes_entry(envelope: dict[str, Any], version: int) -> dict[str, Any]:
    data = json.dumps(envelope, sort_keys=True).encode()
    return {
        "model": "battery-anomaly",
        "version": version,
        "manifest": {"path": f"blobs/{sha256_hex(data)}", "length": len(data), "sha256": sha256_hex(data)},
        "rollout": {"percent": 25.0, "salt": "battery-anomaly:3:7f3a"},
        "urgent": False,
    }


def index_signed(version: int = 6, expires: str = INDEX_EXPIRES) -> dict[str, Any]:
    return {
        "_type": "channel-index",
        "spec_version": SPEC_VERSION,
        "fleet": "pumps-eu",
        "channel": "stable",
        "version": version,
        "expires": expires,
        "models": {
            "battery-anomaly": [
                manifest_bytes_entry(signed_by(manifest_signed(3), "publisher-1", "publisher-2"), 3),
                {
                    **manifest_bytes_entry(signed_by(manifest_signed(2), "publisher-1", "publisher-2"), 2),
                    "rollout": {"percent": 100, "salt": "battery-anomaly:2:11c0"},
                },
            ]
        },
    }


def flip_hex(sig: str) -> str:
    """The same signature with its first byte changed."""
    first = (int(sig[:2], 16) ^ 0x01).to_bytes(1, "big").hex()
    return first + sig[2:]


# --------------------------------------------------------------------------- cases


def build_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []

    def add(name: str, operation: str, expect: str, why: str, *, policy: bool = False, **body: Any) -> None:
        cases.append({"name": name, "operation": operation, "expect": expect, "why": why,
                      "policy": policy, "body": body})

    root1 = signed_by(root_signed(1, ROLES_V1), "root-1", "root-2")
    root2 = signed_by(root_signed(2, ROLES_V2), "root-1", "root-2", "root-4")
    root3 = signed_by(root_signed(3, ROLES_V3), "root-1", "root-4")
    manifest = signed_by(manifest_signed(), "publisher-1", "publisher-2")
    index = signed_by(index_signed(), "index-1")

    # ---- roots shipped in the app
    add("root-v1", "verify_root_self", "ok", "2-of-3 root keys", document=root1, now=NOW)
    add("root-v1-all-keys", "verify_root_self", "ok", "3 of 3 signed", now=NOW,
        document=signed_by(root_signed(1, ROLES_V1), "root-1", "root-2", "root-3"))
    add("root-v1-below-threshold", "verify_root_self", "ThresholdError", "1 of the 2 root signatures needed",
        document=signed_by(root_signed(1, ROLES_V1), "root-1"), now=NOW)
    add("root-v1-expired", "verify_root_self", "ExpiredError", "now is after expires", policy=True,
        document=root1, now=LATER)
    add("root-v1-wrong-type", "verify_root_self", "WrongTypeError", "a manifest is not a root",
        document=manifest, now=NOW)
    tampered_root = copy.deepcopy(root1)
    tampered_root["signed"]["roles"]["index"]["threshold"] = 1
    tampered_root["signed"]["expires"] = "2099-01-01T00:00:00Z"
    add("root-v1-tampered", "verify_root_self", "BadSignatureError", "expires changed after signing",
        document=tampered_root, now=NOW)

    # ---- root rotation
    add("root-chain-v1-v2-v3", "root_chain", "ok",
        "v2 swaps root-3 for root-4, v3 rotates the index key; each signed by old and new thresholds",
        trusted=root1, chain=[root2, root3], now=NOW)
    add("root-chain-v2-only-new-keys", "root_chain", "UnknownKeyError",
        "v2 signed only by keys v1 does not know",
        trusted=root1, chain=[signed_by(root_signed(2, ROLES_V2), "root-4", "root-5")], now=NOW)
    add("root-chain-v2-one-old-key", "root_chain", "ThresholdError",
        "v2 carries only 1 of the 2 v1 root signatures it needs",
        trusted=root1, chain=[signed_by(root_signed(2, ROLES_V2), "root-1", "root-4")], now=NOW)
    add("root-chain-v2-not-self-signed", "root_chain", "ThresholdError",
        "v2 is signed by v1's threshold, but only one of its own keys (root-1) signed it",
        trusted=root1,
        chain=[signed_by(root_signed(2, {**ROLES_V1, "root": (["root-1", "root-4", "root-5"], 2)}),
                         "root-1", "root-2")],
        now=NOW)
    add("root-chain-skips-version", "root_chain", "RootChainError", "v1 straight to v3", policy=True,
        trusted=root1, chain=[signed_by(root_signed(3, ROLES_V2), "root-1", "root-2", "root-4")], now=NOW)
    add("root-chain-replay-v1", "root_chain", "RootChainError", "v1 offered as an update to v1", policy=True,
        trusted=root1, chain=[root1], now=NOW)
    add("root-chain-final-expired", "root_chain", "ExpiredError", "the chain verifies but v2 has expired",
        policy=True,
        trusted=root1,
        chain=[signed_by(root_signed(2, ROLES_V2, expires="2026-02-01T00:00:00Z"),
                         "root-1", "root-2", "root-4")],
        now=NOW)
    add("root-chain-intermediate-expired", "root_chain", "ok",
        "only the final root's expiry counts: v1 has long expired, v2 is current", policy=True,
        trusted=signed_by(root_signed(1, ROLES_V1, expires="2026-01-15T00:00:00Z"), "root-1", "root-2"),
        chain=[root2], now=NOW)

    # ---- manifests
    add("manifest-good", "verify_manifest", "ok", "2-of-3 publisher keys", root=root1, document=manifest)
    chosen = manifest_signed()
    chosen["golden"]["selection"] = {
        "source": "tree-leaves", "normal": 1, "anomalous": 2, "boundary": 0,
        "note": "IsolationForest: split thresholds and deepest leaves (600 normal seeds)",
    }
    add("manifest-golden-selection", "verify_manifest", "ok",
        "golden.selection (how the rows were chosen; optional, added after 1.0) is accepted",
        root=root1, document=signed_by(chosen, "publisher-1", "publisher-2"))
    add("manifest-three-signatures", "verify_manifest", "ok", "more than the threshold is fine", root=root1,
        document=signed_by(manifest_signed(), "publisher-3", "publisher-1", "publisher-2"))
    add("manifest-good-plus-unknown", "verify_manifest", "ok",
        "an extra signature by an unknown key is ignored once the threshold is met", root=root1,
        document=signed_by(manifest_signed(), "publisher-1", "attacker-1", "publisher-2"))
    t = copy.deepcopy(manifest)
    t["signed"]["version"] = 4
    add("manifest-tampered-version", "verify_manifest", "BadSignatureError", "version changed after signing",
        root=root1, document=t)
    t = copy.deepcopy(manifest)
    t["signed"]["golden"]["score"][1] = -0.29
    add("manifest-tampered-golden", "verify_manifest", "BadSignatureError", "a golden score changed",
        root=root1, document=t)
    t = copy.deepcopy(manifest)
    t["signed"]["x-extension"]["z"] = 2
    add("manifest-tampered-unknown-field", "verify_manifest", "BadSignatureError",
        "fields this version does not know are signed too", root=root1, document=t)
    t = copy.deepcopy(manifest)
    t["signatures"][1]["sig"] = flip_hex(t["signatures"][1]["sig"])
    add("manifest-signature-flipped", "verify_manifest", "BadSignatureError", "one signature byte changed",
        root=root1, document=t)
    add("manifest-unknown-keys", "verify_manifest", "UnknownKeyError", "signed only by keys not in the root",
        root=root1, document=signed_by(manifest_signed(), "attacker-1", "attacker-2"))
    add("manifest-wrong-role", "verify_manifest", "UnknownKeyError",
        "the index key is in the root but not in the publisher role",
        root=root1, document=signed_by(manifest_signed(), "index-1"))
    add("manifest-below-threshold", "verify_manifest", "ThresholdError", "1 of 2 publisher signatures",
        root=root1, document=signed_by(manifest_signed(), "publisher-1"))
    add("manifest-duplicate-signature", "verify_manifest", "ThresholdError",
        "the same key twice counts once", root=root1,
        document=signed_by(manifest_signed(), "publisher-1", "publisher-1"))
    add("manifest-one-valid-one-unknown", "verify_manifest", "ThresholdError",
        "one valid publisher signature and one by an outsider", root=root1,
        document=signed_by(manifest_signed(), "publisher-1", "attacker-1"))
    add("manifest-no-signatures", "verify_manifest", "ThresholdError", "an empty signature list",
        root=root1, document={"signed": manifest_signed(), "signatures": []})
    add("manifest-as-index", "verify_manifest", "WrongTypeError", "a genuine index offered as a manifest",
        root=root1, document=index)
    bad = manifest_signed()
    del bad["golden"]
    add("manifest-missing-golden", "verify_manifest", "FormatError",
        "properly signed but lacks golden vectors",
        root=root1, document=signed_by(bad, "publisher-1", "publisher-2"))
    bad = manifest_signed()
    bad["version"] = 0
    add("manifest-version-zero", "verify_manifest", "FormatError", "versions start at 1",
        root=root1, document=signed_by(bad, "publisher-1", "publisher-2"))
    t = copy.deepcopy(manifest)
    t["signed"]["model"]["description"] = "lone surrogate \ud800 here"
    add("manifest-lone-surrogate", "verify_manifest", "FormatError",
        "a string RFC 8785 cannot encode (lone UTF-16 surrogate): no canonical bytes, no signature",
        root=root1, document=t)

    # ---- malformed envelopes (checked before anything else)
    add("envelope-not-object", "verify_manifest", "FormatError", "a JSON array",
        root=root1, document=[manifest])
    add("envelope-no-signatures", "verify_manifest", "FormatError", "the signatures key is missing",
        root=root1, document={"signed": manifest_signed()})
    add("envelope-signed-not-object", "verify_manifest", "FormatError", "signed is a string",
        root=root1, document={"signed": "manifest", "signatures": manifest["signatures"]})
    t = copy.deepcopy(manifest)
    t["signatures"][0]["sig"] = t["signatures"][0]["sig"][:-2]
    add("envelope-short-signature", "verify_manifest", "FormatError", "signature is 63 bytes of hex",
        root=root1, document=t)
    t = copy.deepcopy(manifest)
    t["signatures"][0]["keyid"] = t["signatures"][0]["keyid"].upper()
    add("envelope-uppercase-keyid", "verify_manifest", "FormatError", "key ids are lowercase hex",
        root=root1, document=t)
    t = copy.deepcopy(manifest)
    t["signatures"][0] = {"keyid": t["signatures"][0]["keyid"]}
    add("envelope-signature-without-sig", "verify_manifest", "FormatError", "a signature object lacks sig",
        root=root1, document=t)

    # ---- channel indexes
    add("index-good", "verify_index", "ok", "first sync: nothing trusted yet",
        root=root1, document=index, trusted_version=None, now=NOW)
    add("index-newer", "verify_index", "ok", "v6 over trusted v5", policy=True,
        root=root1, document=index, trusted_version=5, now=NOW)
    add("index-same-version", "verify_index", "ok", "equal: valid, nothing new to do", policy=True,
        root=root1, document=index, trusted_version=6, now=NOW)
    add("index-rollback", "verify_index", "RollbackError", "v6 offered to a device that trusts v7",
        policy=True, root=root1, document=index, trusted_version=7, now=NOW)
    expired = signed_by(index_signed(expires=INDEX_EXPIRED), "index-1")
    add("index-expired", "verify_index", "StaleIndexError", "freeze attack: a genuine but expired index",
        policy=True,
        root=root1, document=expired, trusted_version=5, now=NOW)
    add("index-expires-exactly-now", "verify_index", "StaleIndexError", "expires <= now counts as expired",
        policy=True,
        root=root1, document=signed_by(index_signed(expires=NOW), "index-1"), trusted_version=None, now=NOW)
    add("index-rollback-and-expired", "verify_index", "RollbackError",
        "a rollback is reported as one even when the old index has also expired", policy=True,
        root=root1, document=expired, trusted_version=7, now=NOW)
    t = copy.deepcopy(expired)
    t["signed"]["expires"] = "2099-01-01T00:00:00Z"
    add("index-expiry-extended", "verify_index", "BadSignatureError",
        "expires pushed forward after signing: signatures are checked first",
        root=root1, document=t, trusted_version=None, now=NOW)
    t = copy.deepcopy(index)
    t["signed"]["models"]["battery-anomaly"][0]["rollout"]["percent"] = 100
    add("index-rollout-widened", "verify_index", "BadSignatureError", "rollout percent changed after signing",
        root=root1, document=t, trusted_version=None, now=NOW)
    add("index-publisher-key", "verify_index", "UnknownKeyError",
        "signed by publisher keys, which the index role does not hold",
        root=root1, document=signed_by(index_signed(), "publisher-1", "publisher-2"),
        trusted_version=None, now=NOW)
    add("index-manifest-offered", "verify_index", "WrongTypeError", "a manifest offered as an index",
        root=root1, document=manifest, trusted_version=None, now=NOW)
    bad_time = index_signed(expires="2026-03-08 00:00:00")
    # The schema takes expires as a string; check 2.5 is what reads it.
    add("index-bad-timestamp", "verify_index", "FormatError",
        "expires must be YYYY-MM-DDTHH:MM:SSZ", policy=True, root=root1,
        document=signed_by(bad_time, "index-1"), trusted_version=None, now=NOW)
    add("index-rotated-key", "verify_index", "ok", "index-2 signs, root v3 holds it",
        root=root3, document=signed_by(index_signed(version=7), "index-2"), trusted_version=6, now=NOW)
    add("index-revoked-key", "verify_index", "UnknownKeyError", "index-1 was rotated out in root v3",
        root=root3, document=signed_by(index_signed(version=7), "index-1"), trusted_version=6, now=NOW)
    return cases


CANONICAL_TEXTS: list[tuple[str, str]] = [
    ("key-order-nested", '{"b": {"z": 1, "a": [{"y": 2, "x": 1}]}, "a": null, "B": true}'),
    ("key-order-utf16", '{"\\ufb33": 1, "\\ud83d\\ude00": 2, "a": 3, "\\u00e9": 4, "B": 5, "": 6}'),
    ("string-escapes", '"tab\\t nl\\n quote\\" bs\\\\ slash/ ctl\\u000f del\\u007f ls\\u2028"'),
    ("non-ascii", '{"name": "Akku-Temperatur °C — 網路錯誤 📶"}'),
    ("float-tiny", "1e-7"),
    ("float-tenth", "0.1"),
    ("float-exp-boundary-21", "1e21"),
    ("float-exp-boundary-20", "1e20"),
    ("float-micro", "0.000001"),
    ("float-e-minus-18", "123e-20"),
    ("negative-zero", "-0.0"),
    ("integral-float", "[1.0, -2.50, 100.000]"),
    ("max-safe-integer", "9007199254740991"),
    ("smallest-subnormal", "5e-324"),
    ("largest-double", "1.7976931348623157e308"),
    ("rounding", "333333333.33333329"),
    ("one-third", "0.3333333333333333"),
    ("literals", '[true, false, null, [], {}, ""]'),
]


def build_canonical() -> list[dict[str, Any]]:
    out = []
    for name, text in CANONICAL_TEXTS:
        data = canonical_bytes(json.loads(text))
        out.append({"name": name, "json": text, "canonical_hex": data.hex(), "canonical_utf8": data.decode()})
    return out


def build_rollout() -> list[dict[str, Any]]:
    out = []
    for salt, device, percent in (
        ("battery-anomaly:3:7f3a", "pump-0001", 25.0),
        ("battery-anomaly:3:7f3a", "pump-0002", 25.0),
        ("battery-anomaly:3:7f3a", "pump-0003", 25.0),
        ("battery-anomaly:3:7f3a", "pump-0004", 0.0),
        ("battery-anomaly:3:7f3a", "pump-0005", 100.0),
        ("s", "", 50.0),
        ("salt:with:colons", "device:id", 12.5),
        ("ünï", "Gerät-Ä-😀", 33.33),
        ("x", "pump-0042", 0.01),
    ):
        bucket = rollout_bucket(salt, device)
        out.append(
            {"salt": salt, "device_id": device, "percent": percent, "bucket": bucket,
             "included": bucket < percent * 100}
        )
    # Bucket boundaries: a bucket of b is in iff percent*100 > b.
    for device in ("edge-a", "edge-b"):
        b = rollout_bucket("edge", device)
        for percent in (b / 100, (b + 1) / 100):
            out.append({"salt": "edge", "device_id": device, "percent": percent, "bucket": b,
                        "included": b < percent * 100})
    return out


def build_behaviour() -> list[dict[str, Any]]:
    """Behaviour windows (docs/behaviour.md): observations in, the report's aggregates out.
    The expected values are computed here by the plain definitions (a linear scan for the
    bin, nearest rank for percentiles), not by either client's code. A score of null is NaN
    (JSON has none): it falls in the last bin. Scores and edges are float32 values (a model's
    scores are float32; both clients compare them exactly), here dyadic fractions."""

    def bin_of(edges: list[float], score: float | None) -> int:
        if score is None:
            return len(edges)
        return sum(1 for e in edges if e <= score)

    def rank(values: list[float], q: float) -> float:
        ordered = sorted(values)
        r = max(1, -(-int(q * 1000) * len(ordered) // 1000))  # ceil(q * n) for q in thousandths
        return ordered[r - 1]

    cases = []
    specs = [
        ("one call, scores on and around the edges", [-0.125, 0.0, 0.125],
         [([1, -1, 1, 1, -1], [-0.25, -0.125, 0.0, 0.125, 0.0625], 1.5, "CPUExecutionProvider")]),
        ("three calls, a NaN score in the last bin", [0.0],
         [([1, 1], [0.3, 0.4], 2.0, "CPUExecutionProvider"),
          ([-1], [None], 0.5, "CPUExecutionProvider"),
          ([-1, 1, 1], [-1.0, 2.0, 0.0], 4.25, "NnapiExecutionProvider")]),
        ("no profile: an empty histogram", None,
         [([1, -1], [0.2, -0.3], 3.0, "CoreMLExecutionProvider")] * 4),
        ("twenty calls: p50 and p95 by nearest rank", [-0.5, -0.25, 0.0, 0.25, 0.5],
         [([1], [i / 16 - 0.5], float(i + 1), "CPUExecutionProvider") for i in range(20)]),
    ]
    for why, edges, calls in specs:
        counts = [0] * (len(edges) + 1) if edges is not None else []
        rows = anomalies = 0
        for labels, scores, _, _ in calls:
            rows += len(labels)
            anomalies += sum(1 for v in labels if v == -1)
            if edges is not None:
                for s in scores:
                    counts[bin_of(edges, s)] += 1
        ms = [c[2] for c in calls]
        cases.append({
            "why": why,
            "score_edges": edges,
            "calls": [{"labels": lab, "scores": sco, "ms": m, "provider": p} for lab, sco, m, p in calls],
            "expect": {"rows": rows, "anomalies": anomalies, "calls": len(calls), "histogram": counts,
                       "latency_ms": {"p50": rank(ms, 0.5), "p95": rank(ms, 0.95)},
                       "provider": calls[-1][3]},
        })
    return cases


def build_keys() -> dict[str, Any]:
    return {
        "notice": NOTICE,
        "keys": {
            n: {
                "seed_hex": seed_of(n).hex(),
                "public_hex": public_raw(KEYS[n].public_key()).hex(),
                "keyid": kid(n),
            }
            for n in KEY_NAMES
        },
    }


def build_signing() -> list[dict[str, Any]]:
    """Raw signing vectors: message = canonical bytes, signature by a named key, so a port
    can check its Ed25519 and canonical bytes apart from the document logic."""
    out = []
    for name, signed, key in (
        ("root-v1", root_signed(1, ROLES_V1), "root-1"),
        ("manifest", manifest_signed(), "publisher-1"),
        ("index", index_signed(), "index-1"),
    ):
        data = canonical_bytes(signed)
        out.append({
            "name": name,
            "signed": signed,
            "canonical_hex": data.hex(),
            "sha256": sha256_hex(data),
            "key": key,
            "keyid": kid(key),
            "sig": KEYS[key].sign(data).hex(),
        })
    return out


# --------------------------------------------------------------------------- offline packs

PACK_DEVICE = {"id": "pump-0001", "fleet": "pumps-eu", "channel": "stable", "target": "cpu",
               "runtime": "1.24.4"}
PACK_VALID_FROM = "2026-02-25T00:00:00Z"
PACK_EXPIRES = "2026-03-27T00:00:00Z"


def artifact_body(target: str, version: int) -> bytes:
    """Stand-in artifact bytes (plan_pack checks hashes, it does not run them)."""
    return (f"ORT vector artifact {target} v{version}\n" * 200).encode()


def pack_manifest(version: int) -> dict[str, Any]:
    """``manifest_signed`` with artifact hashes and lengths of real bytes, signed."""
    signed = manifest_signed(version)
    for artifact in signed["artifacts"]:
        body = artifact_body(artifact["target"], version)
        artifact["sha256"] = sha256_hex(body)
        artifact["length"] = len(body)
        artifact["path"] = f"{artifact['sha256']}.ort"
    return signed_by(signed, "publisher-1", "publisher-2")


def build_packs() -> tuple[dict[str, Any], dict[str, bytes]]:
    """``packs.json`` and the ``packs/*.mspack`` files it names: each pack through the
    device's pack checks (device_sim.pack_install.plan_pack, core/pack.ts planPack).
    ``expect`` is the pack-wide verdict; on ``ok``, ``models`` lists per model what the
    device would do (``install`` with the artifact's sha256, or ``failed`` with the reason
    code it reports)."""
    from packager.offline_pack import NewMember, offline_index_signed, pack_bytes

    root1 = signed_by(root_signed(1, ROLES_V1), "root-1", "root-2")
    roots = [
        signed_by(root_signed(2, ROLES_V2), "root-1", "root-2", "root-4"),
        signed_by(root_signed(3, ROLES_V3), "root-1", "root-4"),
        signed_by(root_signed(4, ROLES_V4), "root-1", "root-4"),
    ]
    manifests = {v: pack_manifest(v) for v in (4, 5)}
    manifest_data = {v: json.dumps(m, sort_keys=True).encode() for v, m in manifests.items()}

    def entry(version: int, percent: float) -> dict[str, Any]:
        data = manifest_data[version]
        return {
            "model": "battery-anomaly",
            "version": version,
            "manifest": {"path": f"blobs/{sha256_hex(data)}", "length": len(data),
                         "sha256": sha256_hex(data)},
            "rollout": {"percent": percent, "salt": f"battery-anomaly:{version}:9e1d"},
            "urgent": False,
        }

    def build(
        label: str, *, fleet: str = "pumps-eu", version: int = 7, valid_from: str = PACK_VALID_FROM,
        expires: str = PACK_EXPIRES, signer: str = "offline-1",
        pack_roots: list[dict[str, Any]] | None = None, artifact_override: bytes | None = None,
    ) -> bytes:
        # v5 at 0% comes first: the device's bucket passes it over for v4 at 100%.
        models = {"battery-anomaly": [entry(5, 0.0), entry(4, 100.0)]}
        snapshot = offline_index_signed(
            fleet=fleet, channel="stable", version=version, valid_from=valid_from, expires=expires,
            pack_id=sha256_hex(f"pack {label}".encode())[:32], models=models,
        )
        members = [NewMember(f"roots/{r['signed']['version']}.root.json", "root", dump(r).encode())
                   for r in (roots if pack_roots is None else pack_roots)]
        envelope = dump(signed_by(snapshot, signer)).encode()
        members.append(NewMember("offline-index.json", "offline-index", envelope))
        for v in (5, 4):
            sha = sha256_hex(manifest_data[v])
            members.append(NewMember(f"manifests/{sha}.json", "manifest", manifest_data[v], compress=True))
        for v in (5, 4):
            body = artifact_body("cpu", v)
            if v == 4 and artifact_override is not None:
                body = artifact_override
            members.append(NewMember(f"artifacts/{sha256_hex(artifact_body('cpu', v))}.ort", "artifact",
                                     body, compress=True))
        return pack_bytes(fleet=fleet, channel="stable", created="2026-02-25T00:00:00Z", members=members)

    good = build("good")
    cpu4 = sha256_hex(artifact_body("cpu", 4))
    install = [{"model": "battery-anomaly", "version": 4, "outcome": "install", "artifact": cpu4}]
    tampered = bytearray(good)
    tampered[-10] ^= 0x01  # inside the last member (v4's artifact), the header untouched
    evil = artifact_body("cpu", 4).replace(b"ORT", b"EVL", 1)
    files: dict[str, bytes] = {
        "good": good,
        "other-fleet": build("other-fleet", fleet="pumps-us"),
        "lower-version": build("lower-version", version=5),
        "index-key": build("index-key", signer="index-2"),
        "no-offline-role": build("no-offline-role", pack_roots=roots[:2]),
        "window-too-long": build("window-too-long", expires="2027-03-27T00:00:00Z"),
        "truncated": good[: len(good) // 2],
        "bad-magic": b"MSPACK\x00\x02" + good[8:],
        "member-tampered": bytes(tampered),
        "header-rewritten": build("header-rewritten", artifact_override=evil),
    }
    device = PACK_DEVICE
    cases: list[dict[str, Any]] = []

    def add(name: str, expect: str, why: str, *, models: list[dict[str, Any]] | None = None,
            now: str = NOW, trusted_version: int | None = 6, installed: dict[str, int] | None = None,
            **device_changes: str) -> None:
        cases.append({
            "name": f"pack-{name}", "file": f"packs/{name if name in files else 'good'}.mspack",
            "expect": expect, "why": why, "device": {**device, **device_changes}, "now": now,
            "trusted_version": trusted_version, "installed": installed or {},
            "models": models if expect == "ok" else [],
        })

    add("good", "ok", "root walk v1→v4, offline-1 signs, v5 at 0% passed over for v4 at 100%", models=install)
    add("stale", "StalePackError", "now is after the pack's expires", now="2026-04-01T00:00:00Z")
    add("not-yet-valid", "StalePackError", "now is before the pack's valid_from", now="2026-02-20T00:00:00Z")
    add("other-target", "ok", "the pack carries cpu artifacts only", target="android-nnapi",
        models=[{"model": "battery-anomaly", "version": 4, "outcome": "failed",
                 "reason": "no_artifact_for_target"}])
    add("old-runtime", "ok", "artifacts written by onnxruntime 1.24, the device runs 1.20", runtime="1.20.0",
        models=[{"model": "battery-anomaly", "version": 4, "outcome": "failed", "reason": "runtime_too_old"}])
    add("installed", "ok", "v4 already installed: nothing to do", models=[], installed={"battery-anomaly": 4})
    add("other-fleet", "WrongChannelError", "the snapshot is for pumps-us")
    add("lower-version", "RollbackError", "snapshot v5, the device trusts index v6")
    add("index-key", "UnknownKeyError", "signed by the online index key, not the offline role")
    add("no-offline-role", "FormatError", "the pack's roots stop at v3, which names no offline key")
    add("window-too-long", "FormatError", "valid for 395 days, more than a device accepts")
    add("truncated", "PackFormatError", "the file is cut in half")
    add("bad-magic", "PackFormatError", "container version 2")
    add("member-tampered", "PackFormatError", "a byte of the artifact member changed, the header not")
    add("header-rewritten", "ok", "artifact bytes changed and the unsigned header rewritten to match",
        models=[{"model": "battery-anomaly", "version": 4, "outcome": "failed", "reason": "hash_mismatch"}])
    listing = {"notice": NOTICE, "trusted_root": root1, "cases": cases}
    return listing, {f"packs/{name}.mspack": data for name, data in files.items()
                     if name in {c["file"][6:-7] for c in cases}}


def dump(value: Any) -> str:
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate has no UTF-8 form: that one file keeps JSON's \uXXXX escapes.
        text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=True) + "\n"
    return text


def write_all(out: Path) -> list[Path]:
    (out / "cases").mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {
        "keys.json": build_keys(),
        "canonical.json": {"notice": NOTICE, "cases": build_canonical()},
        "rollout.json": {"notice": NOTICE, "cases": build_rollout()},
        "behaviour.json": {"notice": NOTICE, "cases": build_behaviour()},
        "signing.json": {"notice": NOTICE, "cases": build_signing()},
    }
    packs, pack_files = build_packs()
    files["packs.json"] = packs
    files["cohort.json"] = build_cohort()
    files["shadow.json"] = build_shadow()
    listing = []
    for case in build_cases():
        rel = f"cases/{case['name']}.json"
        files[rel] = {"notice": NOTICE, **case["body"]}
        listing.append({"name": case["name"], "file": rel, "operation": case["operation"],
                        "expect": case["expect"], "why": case["why"], "policy": case["policy"]})
    files["manifest.json"] = {
        "notice": NOTICE,
        "spec_version": SPEC_VERSION,
        "canonical": "canonical.json",
        "keys": "keys.json",
        "rollout": "rollout.json",
        "behaviour": "behaviour.json",
        "signing": "signing.json",
        "packs": "packs.json",
        "cohort": "cohort.json",
        "shadow": "shadow.json",
        "cases": listing,
    }
    (out / "packs").mkdir(exist_ok=True)
    written = []
    for rel, data in pack_files.items():
        (out / rel).write_bytes(data)
        written.append(out / rel)
    for rel, value in files.items():
        path = out / rel
        path.write_text(dump(value), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE,
                        help="directory to write (default: beside this file)")
    args = parser.parse_args(argv)
    written = write_all(args.out)
    print(f"wrote {len(written)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
