"""`modelsync device parity`: artifacts against the scikit-learn reference on fresh telemetry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from device_sim.engine import ModelLoadError
from device_sim.parity import run_parity
from packager.cli import main
from packager.errors import BadSignatureError, BundleError
from packager.keys import load_root
from packager.manifest import TARGETS


def test_every_target_passes_on_fresh_telemetry(small_bundle: Path, keys_dir: Path) -> None:
    report = run_parity(small_bundle, rows=800, seed=11, root=load_root(keys_dir / "root.json"))
    assert report.passed and report.signature_checked
    assert report.data == "fresh telemetry (seed 11)"
    assert [t.target for t in report.targets] == list(TARGETS)
    for t in report.targets:
        assert t.provider == "CPUExecutionProvider"
        assert t.rows == 800
        assert t.flips_beyond_tolerance == 0
        assert t.max_abs_score_diff <= t.score_atol
        assert t.spearman > 0.999


def test_cli_prints_table_and_says_cpu_stands_in(
    small_bundle: Path, keys_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "parity.json"
    code = main(["device", "parity", str(small_bundle), "--rows", "300", "--seed", "5",
                 "--root", str(keys_dir / "root.json"), "--json", str(out)])
    printed = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal width
    assert code == 0
    assert "honest stand-in" in printed and "NNAPI" in printed and "CoreML" in printed
    assert "android-nnapi" in printed and "spearman" in printed
    figures = json.loads(out.read_text())
    assert figures["passed"] is True and figures["seed"] == 5 and len(figures["targets"]) == 3


def _copy(bundle: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "bundle"
    shutil.copytree(bundle, dest)
    return dest


def test_a_tolerance_missed_exits_non_zero(small_bundle: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    bundle = _copy(small_bundle, tmp_path)
    doc = json.loads((bundle / "manifest.json").read_text())
    doc["signed"]["artifacts"][1]["golden_tolerance"]["score_atol"] = 1e-12
    (bundle / "manifest.json").write_text(json.dumps(doc))
    report = run_parity(bundle, rows=400, seed=2)  # no root: the edit is not caught by a signature
    verdicts = {t.target: t.passed for t in report.targets}
    assert verdicts == {"android-nnapi": True, "ios-coreml": False, "cpu": True}
    assert "tolerance 1e-12" in report.targets[1].why
    assert main(["device", "parity", str(bundle), "--rows", "300", "--seed", "2"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_edited_manifest_is_refused_with_root(small_bundle: Path, keys_dir: Path, tmp_path: Path) -> None:
    bundle = _copy(small_bundle, tmp_path)
    doc = json.loads((bundle / "manifest.json").read_text())
    doc["signed"]["artifacts"][0]["golden_tolerance"]["score_atol"] = 1.0
    (bundle / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(BadSignatureError):
        run_parity(bundle, rows=100, root=load_root(keys_dir / "root.json"))


def test_tampered_reference_is_never_unpickled(small_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(small_bundle, tmp_path)
    doc = json.loads((bundle / "manifest.json").read_text())
    ref = bundle / doc["signed"]["reference"]["path"]
    ref.write_bytes(ref.read_bytes() + b"\x00")
    with pytest.raises(ModelLoadError, match="refusing to unpickle"):
        run_parity(bundle, rows=100, seed=1)


def test_tampered_artifact_and_bad_rows(small_bundle: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    bundle = _copy(small_bundle, tmp_path)
    doc = json.loads((bundle / "manifest.json").read_text())
    art = bundle / doc["signed"]["artifacts"][2]["path"]
    data = bytearray(art.read_bytes())
    data[len(data) // 2] ^= 0x01
    art.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"cpu: .* has sha256"):
        run_parity(bundle, rows=100, seed=1)
    assert main(["device", "parity", str(bundle), "--rows", "0"]) == 2
    assert "--rows must be >= 1" in capsys.readouterr().err
    assert main(["device", "parity", str(tmp_path / "nowhere")]) == 2
