"""Stage 1 of the demo (packager.demo), on a smaller forest so the test stays quick."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from packager import demo
from packager.keys import load_root
from packager.verify import verify_bundle


def test_packaging_demo_writes_a_verified_bundle_and_prints_parity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo, "DEMO_TREES", 25)
    monkeypatch.setattr(demo, "DEMO_ROWS", 2000)
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=False)
    bundle = demo.run_packaging_demo(tmp_path, console)
    assert bundle == tmp_path / "bundle-v1"
    report = verify_bundle(bundle, load_root(tmp_path / "keys" / "root.json"))
    assert report.manifest.name == demo.MODEL_NAME
    text = out.getvalue()
    for line in ("injected anomalies found", "1,000 held-out rows", "android-nnapi", "100.00%"):
        assert line in text
    # Run again: keys are kept, the bundle is replaced.
    keys_before = (tmp_path / "keys" / "root.json").read_bytes()
    assert demo.run_packaging_demo(tmp_path, console) == bundle
    assert (tmp_path / "keys" / "root.json").read_bytes() == keys_before
