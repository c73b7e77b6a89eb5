"""A detector with weights (PCA): INT8 and FP16 artifacts in one bundle, each held to the
golden tolerance derived from its own precision and measured deviation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from packager.errors import BundleError
from packager.golden import SCORE_ATOL_FLOOR
from packager.keys import load_private_key, load_root
from packager.manifest import TARGETS, Artifact, sign
from packager.verify import verify_bundle


@pytest.fixture(scope="module")
def pca_bundle(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> Path:
    from packager.detectors import PCADetector
    from packager.package import build_and_write
    from packager.telemetry import generate_telemetry

    data = generate_telemetry(2000, seed=5)
    return build_and_write(
        PCADetector().fit(data.frame), name="fleet-pca", version=1, targets=TARGETS,
        keys=[load_private_key(keys_dir / "publisher.key")], root=load_root(keys_dir / "root.json"),
        out_dir=tmp_path_factory.mktemp("pca") / "bundle", calibration=data.frame.to_numpy(),
    )


def test_reduced_precisions_verify_within_their_own_tolerance(pca_bundle: Path, keys_dir: Path) -> None:
    report = verify_bundle(pca_bundle, load_root(keys_dir / "root.json"))
    by_target: dict[str, Artifact] = {a.target: a for a in report.manifest.artifacts}
    assert {t: a.precision for t, a in by_target.items()} == {
        "android-nnapi": "int8", "ios-coreml": "fp16", "cpu": "int8",
    }
    assert by_target["android-nnapi"].quantization.method == "qdq-static"
    assert by_target["cpu"].quantization.method == "dynamic"
    for check in report.checks:
        tol = by_target[check.target].golden_tolerance
        assert tol.score_atol >= SCORE_ATOL_FLOOR[check.precision]
        # Derived from the measured deviation with headroom, so the artifact passes with room.
        assert check.deviation.max_abs_score_diff <= tol.score_atol / 2


def test_int8_artifact_does_not_pass_as_the_fp16_one(
    pca_bundle: Path, keys_dir: Path, tmp_path: Path
) -> None:
    bundle = Path(shutil.copytree(pca_bundle, tmp_path / "b"))
    env = json.loads((bundle / "manifest.json").read_text())
    arts = {a["target"]: a for a in env["signed"]["artifacts"]}
    coreml, cpu = arts["ios-coreml"], arts["cpu"]
    (bundle / coreml["path"]).unlink()
    for field in ("path", "sha256", "length", "compressed"):
        coreml[field] = cpu[field]
    signed = sign(env["signed"], [load_private_key(keys_dir / "publisher.key")])
    (bundle / "manifest.json").write_text(json.dumps(signed))
    with pytest.raises(BundleError, match=r"ios-coreml \(fp16.*golden"):
        verify_bundle(bundle, load_root(keys_dir / "root.json"))
