"""Bundles as written: layout, manifest contents, determinism of the recorded sizes and
hashes, and verify_bundle on the untouched bundle. Tampering is in test_bundle_tamper.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import zstandard

from packager.compression import ZSTD_LEVEL
from packager.keys import load_root
from packager.manifest import TARGETS, ModelManifest, sha256_hex, verify_manifest
from packager.runtime import run_artifact
from packager.verify import verify_bundle


def _manifest(bundle: Path, keys_dir: Path) -> ModelManifest:
    raw = json.loads((bundle / "manifest.json").read_text())
    return verify_manifest(raw, load_root(keys_dir / "root.json"))


def test_layout_is_flat_and_content_addressed(small_bundle: Path, keys_dir: Path) -> None:
    m = _manifest(small_bundle, keys_dir)
    assert m.reference is not None
    named = {a.path for a in m.artifacts} | {m.reference.path}
    assert {p.name for p in small_bundle.iterdir()} == named | {"manifest.json"}
    for path in named:
        data = (small_bundle / path).read_bytes()
        assert path == f"{sha256_hex(data)}.{path.rsplit('.', 1)[1]}"
    for a in m.artifacts:
        assert (small_bundle / a.path).stat().st_size == a.length
    assert not any(p.name.startswith(".") for p in small_bundle.parent.iterdir())


def test_manifest_describes_every_target(small_bundle: Path, keys_dir: Path) -> None:
    m = _manifest(small_bundle, keys_dir)
    assert [a.target for a in m.artifacts] == list(TARGETS)
    assert (m.name, m.version) == ("fleet-iforest", 1)
    assert m.model.family == "isolation_forest"
    assert [f.name for f in m.model.features][:2] == ["battery_level", "battery_temp_c"]
    assert [o.name for o in m.model.outputs] == ["label", "score"]
    styles = {a.target: a.optimization_style for a in m.artifacts}
    assert styles == {"android-nnapi": "Runtime", "ios-coreml": "Runtime", "cpu": "Fixed"}
    for a in m.artifacts:
        # Tree ensembles: nothing to quantize, and the manifest says why.
        assert a.precision == "fp32" and not a.quantization.applied and a.quantization.reason
        assert a.ort_version.startswith("1.24")
        assert a.parity.label_agreement == 1.0 and a.parity.max_abs_score_diff < 1e-5


def test_compressed_copy_is_the_one_the_service_serves(
    small_bundle: Path, keys_dir: Path, tmp_path: Path
) -> None:
    from sync_service.storage import blob_key
    from sync_service.storage.local import LocalStorage
    from sync_service.transfer import ensure_zstd, zstd_key

    storage = LocalStorage(tmp_path / "blobs")
    for a in _manifest(small_bundle, keys_dir).artifacts:
        assert a.compressed is not None and a.compressed.level == ZSTD_LEVEL
        storage.put(blob_key(a.sha256), small_bundle / a.path)
        assert ensure_zstd(storage, a.sha256) == a.compressed.length
        packed = storage.get(zstd_key(a.sha256))
        assert sha256_hex(packed) == a.compressed.sha256
        # The frame carries the content size: one-shot decoders need it.
        assert zstandard.ZstdDecompressor().decompress(packed) == (small_bundle / a.path).read_bytes()


def test_golden_vectors_mix_normal_and_anomalous_rows(small_bundle: Path, keys_dir: Path) -> None:
    m = _manifest(small_bundle, keys_dir)
    g = m.golden
    assert 20 <= len(g.inputs) <= 40
    assert len(g.label) == len(g.score) == len(g.inputs)
    assert all(len(row) == len(m.model.features) for row in g.inputs)
    assert {-1, 1} <= set(g.label)
    scores = np.asarray(g.score)
    assert (scores < 0).sum() >= 8 and (scores > 0).sum() >= 8
    # Inputs are exactly representable float32 values: what a device feeds.
    x = np.asarray(g.inputs)
    assert np.array_equal(x.astype(np.float32).astype(np.float64), x)
    assert len({tuple(r) for r in g.inputs}) == len(g.inputs)


def test_every_artifact_meets_its_stated_tolerance(small_bundle: Path, keys_dir: Path) -> None:
    m = _manifest(small_bundle, keys_dir)
    x = np.asarray(m.golden.inputs, dtype=np.float32)
    for a in m.artifacts:
        label, score = run_artifact(small_bundle / a.path, x)
        assert a.golden_tolerance.score_atol >= 1e-5
        assert np.abs(score - np.asarray(m.golden.score)).max() <= a.golden_tolerance.score_atol
        assert int((label != np.asarray(m.golden.label)).sum()) <= a.golden_tolerance.max_label_mismatches


def test_verify_bundle_passes_and_reports_deviation(small_bundle: Path, keys_dir: Path) -> None:
    report = verify_bundle(small_bundle, load_root(keys_dir / "root.json"))
    assert [c.target for c in report.checks] == list(TARGETS)
    assert all(c.deviation.max_abs_score_diff < 1e-5 for c in report.checks)
    assert all(c.deviation.label_mismatches == 0 for c in report.checks)


def test_versions_differ_in_artifacts(make_bundle: object, small_bundle: Path, keys_dir: Path) -> None:
    v2 = make_bundle(2)  # type: ignore[operator]
    m1, m2 = _manifest(small_bundle, keys_dir), _manifest(v2, keys_dir)
    assert m2.version == 2
    assert {a.sha256 for a in m1.artifacts}.isdisjoint(a.sha256 for a in m2.artifacts)
