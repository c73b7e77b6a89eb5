"""--json on the packager's commands: one JSON document on stdout, the progress display on
stderr; errors as JSON with their exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from packager import exit_codes
from packager.cli import main


def test_verify_and_inspect_as_json(
    small_bundle: Path, keys_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", str(small_bundle), "--root", str(keys_dir / "root.json"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["name"] == "fleet-iforest" and report["version"] == 1
    assert {c["target"] for c in report["checks"]} == {"android-nnapi", "ios-coreml", "cpu"}
    assert all(c["label_mismatches"] == 0 for c in report["checks"])
    assert main(["inspect", str(small_bundle), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["name"] == "fleet-iforest" and len(manifest["artifacts"]) >= 3


def test_a_verification_failure_as_json(
    small_bundle: Path, keys_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(small_bundle, bundle)
    (bundle / "stray.bin").write_bytes(b"x")
    code = main(["verify", str(bundle), "--root", str(keys_dir / "root.json"), "--json"])
    out, err = capsys.readouterr()
    assert code == exit_codes.VERIFICATION
    error = json.loads(out)["error"]
    assert error["code"] == "bundle" and error["exit_code"] == 3 and "stray.bin" in error["message"]
    assert err.strip().count("\n") == 0 and err.strip().startswith("modelsync: error:")
