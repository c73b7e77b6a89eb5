"""MAX_MANIFEST_BYTES: the packager never writes a manifest a device would refuse to read
(docs/packager.md; the device side is tests/device_sim/test_sync_limits.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from packager.errors import UsageError
from packager.manifest import MAX_MANIFEST_BYTES
from packager.pipeline import BuildResult
from tests.packager.test_bundle_write import _write, built

__all__ = ["built"]  # the module-scoped fixture


def test_a_manifest_over_the_cap_is_not_written(
    built: tuple[BuildResult, np.ndarray], keys_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "b"
    with pytest.raises(UsageError, match=f"more than the {MAX_MANIFEST_BYTES}"):
        _write(built, keys_dir, out, description="x" * MAX_MANIFEST_BYTES)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging directory left either
    small = _write(built, keys_dir, tmp_path / "ok", description="small") / "manifest.json"
    assert small.stat().st_size < MAX_MANIFEST_BYTES
