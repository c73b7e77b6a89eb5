"""write_bundle's guarantees: never a partial bundle (errors, Ctrl-C, --force over an old
one), keys checked against the root before any work, golden tolerances derived honestly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from packager.bundle import write_bundle
from packager.errors import BundleError, KeyLoadError, UsageError
from packager.golden import (
    SCORE_ATOL_FLOOR,
    Deviation,
    _round_up,
    check_golden,
    select_golden_rows,
    tolerance_for,
)
from packager.keys import RoleSpec, init_keys, load_private_key, load_root
from packager.manifest import GoldenTolerance, GoldenVectors
from packager.pipeline import BuildResult
from packager.verify import verify_bundle


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[BuildResult, np.ndarray]:
    from packager.detectors import IsolationForestDetector
    from packager.pipeline import build
    from packager.telemetry import generate_telemetry

    data = generate_telemetry(2000, seed=3)
    model = IsolationForestDetector(n_estimators=25, random_state=3).fit(data.frame)
    rows = data.frame.to_numpy()
    result = build(model, targets=["cpu"], workdir=tmp_path_factory.mktemp("work"), calibration=rows)
    return result, rows


class Interrupt:
    """Stands in for a rich Progress and raises once the bundle is half written."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def add_task(self, *_: Any, **__: Any) -> int:
        return 0

    def advance(self, *_: Any) -> None:
        raise self.exc

    def update(self, *_: Any, **__: Any) -> None:
        pass


def _write(built: tuple[BuildResult, np.ndarray], keys_dir: Path, out: Path, **kw: Any) -> Path:
    result, rows = built
    kw.setdefault("keys", [load_private_key(keys_dir / "publisher.key")])
    return write_bundle(result, name="m", version=1, out_dir=out, golden_rows=rows, **kw)


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("disk on fire")])
def test_interrupted_write_leaves_nothing(
    built: tuple[BuildResult, np.ndarray], keys_dir: Path, tmp_path: Path, exc: BaseException
) -> None:
    with pytest.raises(type(exc)):
        _write(built, keys_dir, tmp_path / "b", progress=Interrupt(exc))
    assert list(tmp_path.iterdir()) == []


def test_failed_forced_rewrite_keeps_the_old_bundle(
    built: tuple[BuildResult, np.ndarray], keys_dir: Path, tmp_path: Path
) -> None:
    out = _write(built, keys_dir, tmp_path / "b")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(KeyboardInterrupt):
        _write(built, keys_dir, out, force=True, progress=Interrupt(KeyboardInterrupt()))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _leftovers(tmp_path) == []


def test_force_replaces_and_empty_dir_is_fine(
    built: tuple[BuildResult, np.ndarray], keys_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "b"
    out.mkdir()
    _write(built, keys_dir, out)
    (out / "stale.txt").write_text("old")
    with pytest.raises(UsageError, match="not empty"):
        _write(built, keys_dir, out)
    _write(built, keys_dir, out, force=True)
    assert not (out / "stale.txt").exists()
    verify_bundle(out, load_root(keys_dir / "root.json"))
    assert _leftovers(tmp_path) == []


def test_output_that_is_a_file_is_refused(
    built: tuple[BuildResult, np.ndarray], keys_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "b").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        _write(built, keys_dir, tmp_path / "b", force=True)


def test_keys_outside_publisher_role_are_refused_before_writing(
    built: tuple[BuildResult, np.ndarray], keys_dir: Path, tmp_path: Path
) -> None:
    root = load_root(keys_dir / "root.json")
    with pytest.raises(KeyLoadError, match="not a publisher key of root v1"):
        _write(built, keys_dir, tmp_path / "b", keys=[load_private_key(keys_dir / "index.key")], root=root)
    with pytest.raises(KeyLoadError, match="no publisher key"):
        _write(built, keys_dir, tmp_path / "b", keys=[])
    assert list(tmp_path.iterdir()) == []


def test_two_of_three_publishers(built: tuple[BuildResult, np.ndarray], tmp_path: Path) -> None:
    d = tmp_path / "keys"
    init_keys(d, {"publisher": RoleSpec(count=3, threshold=2)})
    root = load_root(d / "root.json")
    one = [load_private_key(d / "publisher.key")]
    two = [*one, load_private_key(d / "publisher-3.key")]
    with pytest.raises(KeyLoadError, match="1 publisher key"):
        _write(built, d, tmp_path / "b", keys=one, root=root)
    # The same key twice is still one key.
    with pytest.raises(KeyLoadError, match="1 publisher key"):
        _write(built, d, tmp_path / "b", keys=one + one, root=root)
    out = _write(built, d, tmp_path / "b", keys=two, root=root)
    assert verify_bundle(out, root).manifest.name == "m"


def test_golden_pool_with_nan_is_refused(
    built: tuple[BuildResult, np.ndarray], keys_dir: Path, tmp_path: Path
) -> None:
    result, rows = built
    bad = rows.copy()
    bad[0, 0] = np.nan
    with pytest.raises(UsageError, match="NaN"):
        write_bundle(
            result, name="m", version=1, out_dir=tmp_path / "b", golden_rows=bad,
            keys=[load_private_key(keys_dir / "publisher.key")],
        )


# ------------------------------------------------------------------ golden vectors


def _golden(scores: list[float]) -> GoldenVectors:
    return GoldenVectors(
        inputs=[[float(i)] for i in range(len(scores))],
        label=[-1 if s < 0 else 1 for s in scores],
        score=scores,
    )


def test_selection_covers_normal_anomalous_near_threshold_and_edge_rows(
    built: tuple[BuildResult, np.ndarray],
) -> None:
    result, rows = built
    g = select_golden_rows(rows, result.reference_outputs, 0.0)
    scores = np.asarray(g.score)
    pool_scores = result.reference_outputs(rows)[1]
    assert scores.min() == pool_scores.min()  # the most anomalous row of the pool is in
    near = np.sort(np.abs(pool_scores))[:4]
    assert all(np.isclose(np.abs(scores), v).any() for v in near)
    x = np.asarray(g.inputs, dtype=np.float32)
    assert x[:, 0].max() == rows[:, 0].max() and x[:, 1].min() == rows[:, 1].min()  # edge rows
    pool = {tuple(r) for r in np.asarray(rows, dtype=np.float32)}
    assert g.selection is not None and g.selection.boundary > 0
    # real rows only, but for the boundary pairs bisected between two of them (at the end)
    assert all(tuple(r) in pool for r in x[: len(x) - g.selection.boundary])
    assert select_golden_rows(rows, result.reference_outputs, 0.0) == g  # deterministic


def test_tolerance_uses_headroom_over_measured_and_precision_floor() -> None:
    g = _golden([0.2, -0.15, 0.18, 0.0004, -0.3, -0.4, 0.5])
    fp32 = tolerance_for(g, "fp32", Deviation(1e-7, 0), 0.0)
    assert fp32 == GoldenTolerance(score_atol=SCORE_ATOL_FLOOR["fp32"], max_label_mismatches=0)
    int8 = tolerance_for(g, "int8", Deviation(0.03, 0), 0.0)
    assert int8.score_atol == pytest.approx(0.12)
    # Only rows within atol of the threshold may flip: here the 0.0004 row only.
    assert int8.max_label_mismatches == 1
    fp16 = tolerance_for(g, "fp16", Deviation(0.0, 0), 0.0)
    assert fp16.score_atol == SCORE_ATOL_FLOOR["fp16"] and fp16.max_label_mismatches == 1


@pytest.mark.parametrize("value", [1e-5, 1.0149e-5, 3.3e-7, 0.0123, 0.5, 2.0000001e-3, 9.99e-3, 123.4])
def test_round_up_never_lowers(value: float) -> None:
    rounded = _round_up(value)
    assert value <= rounded <= value * 1.11
    assert len(f"{rounded:.6g}".replace(".", "").replace("e-0", "").lstrip("0").rstrip("0")) <= 3


def test_check_golden_names_what_missed() -> None:
    g = _golden([0.2, -0.1])
    tol = GoldenTolerance(score_atol=1e-3, max_label_mismatches=0)
    ok = (np.array([1, -1]), np.array([0.2005, -0.1], dtype=np.float32))
    assert check_golden(g, tol, ok, "cpu").label_mismatches == 0
    with pytest.raises(BundleError, match=r"cpu: golden vectors off by 0\.01"):
        check_golden(g, tol, (np.array([1, -1]), np.array([0.21, -0.1])), "cpu")
    with pytest.raises(BundleError, match="1 golden label"):
        check_golden(g, tol, (np.array([1, 1]), np.array([0.2, -0.1])), "cpu")
    with pytest.raises(BundleError, match="off by inf"):
        check_golden(g, tol, (np.array([1, -1]), np.array([np.nan, -0.1])), "cpu")
    with pytest.raises(BundleError, match="1 labels, 1 scores for 2 rows"):
        check_golden(g, tol, (np.array([1]), np.array([0.2])), "cpu")
