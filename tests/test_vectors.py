"""The cross-language vectors (tests/vectors/) against the device's own checks
(device_sim.trust, in docs/device.md's order), and those decided by structure and
signatures alone against the schema layer (packager.manifest) as well.

The TypeScript client walks the same files the same way (react-native-stub/test/
vectors.test.ts, through core/trust.ts and core/documents.ts); all must reach the verdict
recorded in tests/vectors/manifest.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from device_sim import errors as device_errors
from device_sim import trust
from packager import errors
from packager.manifest import (
    canonical_bytes,
    keyid_of,
    parse_time,
    sha256_hex,
    verify_index,
    verify_manifest,
    verify_root_self,
    verify_root_signed_by,
)
from packager.rollout import rollout_bucket

VECTORS = Path(__file__).resolve().parent / "vectors"
INDEX = json.loads((VECTORS / "manifest.json").read_text(encoding="utf-8"))
SCHEMA_CASES = [c for c in INDEX["cases"] if not c["policy"]]
POLICY_ERRORS = {"RollbackError", "ExpiredError", "RootChainError", "StaleIndexError"}


def load(rel: str) -> Any:
    return json.loads((VECTORS / rel).read_text(encoding="utf-8"))


def run_device_case(operation: str, body: dict[str, Any]) -> None:
    """A case through the checks a syncing device runs."""
    now = parse_time(body["now"]) if "now" in body else None
    if operation == "verify_root_self":
        trust.final_root(trust.trusted_root(body["document"]), now)  # checks 1.1, 1.6
    elif operation == "root_chain":
        root = trust.trusted_root(body["trusted"])  # check 1.1
        for step, raw in enumerate(body["chain"], start=1):
            root = trust.next_root(root, raw, step)  # checks 1.2-1.4
        trust.final_root(root, now)  # check 1.6
    elif operation == "verify_manifest":
        trust.check_manifest_signed(body["document"], trust.trusted_root(body["root"]))  # 3.2, 3.3
    elif operation == "verify_index":
        doc = body["document"]
        signed = doc.get("signed") if isinstance(doc, dict) else None
        named = signed if isinstance(signed, dict) else {}
        # The device follows the fleet and channel the index names: check 2.3 is not under test.
        fleet, channel = named.get("fleet", ""), named.get("channel", "")
        trust.check_index(doc, trust.trusted_root(body["root"]), fleet=str(fleet), channel=str(channel),
                          trusted_version=body["trusted_version"], now=now)  # checks 2.1-2.5
    else:
        raise AssertionError(f"unknown operation {operation}")


def run_schema_case(operation: str, body: dict[str, Any]) -> None:
    """A structure-and-signatures case through the schema layer: no versions, no clock."""
    if operation == "verify_root_self":
        verify_root_self(body["document"])
    elif operation == "root_chain":
        root = verify_root_self(body["trusted"])
        for raw in body["chain"]:
            root = verify_root_signed_by(root, raw)
    elif operation == "verify_manifest":
        verify_manifest(body["document"], verify_root_self(body["root"]))
    elif operation == "verify_index":
        verify_index(body["document"], verify_root_self(body["root"]))
    else:
        raise AssertionError(f"unknown operation {operation}")


@pytest.mark.parametrize("case", INDEX["cases"], ids=[c["name"] for c in INDEX["cases"]])
def test_device_verdict(case: dict[str, Any]) -> None:
    body = load(case["file"])
    if case["expect"] == "ok":
        run_device_case(case["operation"], body)
        return
    expected = getattr(device_errors, case["expect"])
    with pytest.raises(errors.VerificationError) as info:
        run_device_case(case["operation"], body)
    # Exact class, not a subclass: the TypeScript client reports the same name.
    assert type(info.value) is expected, f"{case['name']}: {type(info.value).__name__}: {info.value}"


@pytest.mark.parametrize("case", SCHEMA_CASES, ids=[c["name"] for c in SCHEMA_CASES])
def test_schema_verdict(case: dict[str, Any]) -> None:
    body = load(case["file"])
    if case["expect"] == "ok":
        run_schema_case(case["operation"], body)
        return
    expected = getattr(errors, case["expect"])
    with pytest.raises(errors.VerificationError) as info:
        run_schema_case(case["operation"], body)
    assert type(info.value) is expected, f"{case['name']}: {type(info.value).__name__}: {info.value}"


def test_policy_verdicts_are_marked_policy() -> None:
    # A case the schema layer cannot decide must not be run through it.
    for case in INDEX["cases"]:
        if case["expect"] in POLICY_ERRORS:
            assert case["policy"], case["name"]
    assert any(c["policy"] and c["expect"] == "ok" for c in INDEX["cases"])


def test_every_error_class_is_exercised() -> None:
    wanted = {
        "FormatError", "WrongTypeError", "UnknownKeyError", "BadSignatureError",
        "ThresholdError", "ExpiredError", "RollbackError", "RootChainError", "StaleIndexError",
    }
    assert wanted <= {c["expect"] for c in INDEX["cases"]}


@pytest.mark.parametrize("case", load("canonical.json")["cases"], ids=lambda c: c["name"])
def test_canonical_bytes(case: dict[str, Any]) -> None:
    data = canonical_bytes(json.loads(case["json"]))
    assert data.hex() == case["canonical_hex"]
    assert data.decode() == case["canonical_utf8"]


def test_canonical_rfc8785_spot_checks() -> None:
    # Hand-checked against RFC 8785 section 3.2.2.3 (ECMAScript number serialisation).
    by_name = {c["name"]: c["canonical_utf8"] for c in load("canonical.json")["cases"]}
    assert by_name["float-tiny"] == "1e-7"
    assert by_name["float-exp-boundary-21"] == "1e+21"
    assert by_name["float-exp-boundary-20"] == "100000000000000000000"
    assert by_name["negative-zero"] == "0"
    assert by_name["integral-float"] == "[1,-2.5,100]"
    assert by_name["key-order-utf16"].startswith('{"":6,"B":5,"a":3,"é":4,"😀":2')


@pytest.mark.parametrize("case", load("rollout.json")["cases"], ids=lambda c: f"{c['salt']}|{c['device_id']}")
def test_rollout_bucket(case: dict[str, Any]) -> None:
    bucket = rollout_bucket(case["salt"], case["device_id"])
    assert bucket == case["bucket"]
    assert (bucket < case["percent"] * 100) is case["included"]


def test_signing_vectors_and_keys() -> None:
    keys = load("keys.json")
    assert "TEST" in keys["notice"]
    for name, k in keys["keys"].items():
        priv = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(k["seed_hex"]))
        raw = bytes.fromhex(k["public_hex"])
        assert keyid_of(priv.public_key()) == k["keyid"] == keyid_of(raw), name
    for case in load("signing.json")["cases"]:
        data = canonical_bytes(case["signed"])
        assert data.hex() == case["canonical_hex"]
        assert sha256_hex(data) == case["sha256"]
        pub = Ed25519PublicKey.from_public_bytes(bytes.fromhex(keys["keys"][case["key"]]["public_hex"]))
        pub.verify(bytes.fromhex(case["sig"]), data)


def test_index_entries_point_at_real_manifest_bytes() -> None:
    body = load("cases/index-good.json")
    for entries in body["document"]["signed"]["models"].values():
        for entry in entries:
            assert entry["manifest"]["path"] == f"blobs/{entry['manifest']['sha256']}"


def test_regenerating_gives_identical_bytes(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(VECTORS / "generate.py"), "--out", str(tmp_path)],
        check=True, capture_output=True,
    )
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.json"))
    stored = sorted(p.relative_to(VECTORS) for p in VECTORS.rglob("*.json"))
    assert fresh == stored
    for rel in fresh:
        assert (tmp_path / rel).read_bytes() == (VECTORS / rel).read_bytes(), f"{rel} differs"


PACKS = load("packs.json")


def plan_pack_case(case: dict[str, Any]) -> list[dict[str, Any]]:
    """A pack through the device's pack checks (P.1 to 4.2, device_sim.pack_install)."""
    from device_sim.pack_install import plan_pack
    from packager.offline_pack import PackReader

    device = case["device"]
    with PackReader(VECTORS / case["file"]) as reader:
        plan = plan_pack(
            reader, trusted_root=PACKS["trusted_root"], device_id=device["id"], fleet=device["fleet"],
            channel=device["channel"], target=device["target"], runtime=device["runtime"],
            trusted_version=case["trusted_version"], installed=case["installed"], failed={},
            now=parse_time(case["now"]),
        )
    return [m.verdict for m in plan.models]


@pytest.mark.parametrize("case", PACKS["cases"], ids=[c["name"] for c in PACKS["cases"]])
def test_pack_verdict(case: dict[str, Any]) -> None:
    if case["expect"] == "ok":
        assert plan_pack_case(case) == case["models"]
        return
    expected = getattr(device_errors, case["expect"])
    with pytest.raises(errors.VerificationError) as info:
        plan_pack_case(case)
    assert type(info.value) is expected, f"{case['name']}: {type(info.value).__name__}: {info.value}"


def test_pack_files_regenerate_identically(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(VECTORS / "generate.py"), "--out", str(tmp_path)],
        check=True, capture_output=True,
    )
    stored = sorted(p.relative_to(VECTORS) for p in (VECTORS / "packs").glob("*.mspack"))
    assert stored == sorted(p.relative_to(tmp_path) for p in (tmp_path / "packs").glob("*.mspack"))
    for rel in stored:
        assert (tmp_path / rel).read_bytes() == (VECTORS / rel).read_bytes(), f"{rel} differs"


BEHAVIOUR = json.loads((VECTORS / "behaviour.json").read_text(encoding="utf-8"))["cases"]


@pytest.mark.parametrize("case", BEHAVIOUR, ids=[c["why"] for c in BEHAVIOUR])
def test_behaviour_window(case: dict[str, Any]) -> None:
    """The device's behaviour window (device_sim/behaviour.py) reaches each case's report;
    react-native-stub/test/behaviour.test.ts runs the same cases."""
    import numpy as np

    from device_sim.behaviour import Window

    window = Window(edges=case["score_edges"], since="2026-01-01T00:00:00Z")
    for call in case["calls"]:
        scores = np.array([np.nan if s is None else s for s in call["scores"]], dtype=np.float32)
        window.observe(np.array(call["labels"], dtype=np.int64), scores, call["ms"] / 1000, call["provider"])
    report = window.report()
    assert report["since"] == "2026-01-01T00:00:00Z"
    assert {k: v for k, v in report.items() if k != "since"} == case["expect"]
