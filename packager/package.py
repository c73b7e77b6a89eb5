"""Package a model file into a bundle: load and check every input first, then build and
write. This is ``modelsync package`` as a library call; each bad input is a one-line
``ModelSyncError`` raised before anything is written."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from packager.bundle import check_out_dir, check_publisher_keys, write_bundle
from packager.errors import UsageError
from packager.manifest import TARGETS, ModelManifest, Root

if TYPE_CHECKING:
    from rich.progress import Progress

NAME_PATTERN: str = next(
    m.pattern for m in ModelManifest.model_fields["name"].metadata if getattr(m, "pattern", None)
)


def load_calibration(
    path: Path, features: Sequence[str] | None = None, *, required: bool = False
) -> NDArray[np.float32]:
    """Rows from ``.npy`` or ``.csv``. A CSV header naming every one of ``features`` has its
    columns picked in that order; with ``required`` (names the user gave), a header lacking
    one is an error, otherwise columns are taken as they stand. NaN/inf are refused by the
    pipeline, which names the column."""
    if not path.is_file():
        raise UsageError(f"calibration file not found: {path}")
    columns: list[str] | None = None
    try:
        if path.suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        else:
            data, columns = _read_csv(path, features, required)
        x = np.asarray(data, dtype=np.float64)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read calibration data: {str(exc).splitlines()[0]}") from None
    if x.ndim != 2 or x.shape[0] == 0:
        raise UsageError(f"{path}: calibration data must be a non-empty table, got shape {x.shape}")
    if columns is None and features is not None and len(features) == x.shape[1]:
        columns = list(features)  # no header: the columns are the model's, in its order
    _check_finite(path, x, columns)
    return x.astype(np.float32)


def _check_finite(path: Path, x: NDArray[np.float64], columns: Sequence[str] | None) -> None:
    """NaN/inf would poison INT8 scales and parity; name the first one as a person finds it
    (1-based data row, header not counted; column number and name)."""
    bad = ~np.isfinite(x) | (np.abs(x) > np.finfo(np.float32).max)
    if not bad.any():
        return
    row, col = (int(v) for v in np.argwhere(bad)[0])
    name = f" ({columns[col]!r})" if columns is not None and col < len(columns) else ""
    raise UsageError(
        f"{path}: row {row + 1}, column {col + 1}{name} is {float(x[row, col])}"
        f" ({int(bad.sum())} non-finite value(s) in all); clean or drop those rows"
    )


def _read_csv(path: Path, features: Sequence[str] | None, required: bool) -> tuple[Any, list[str] | None]:
    import pandas as pd

    raw = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    if not any(cell.strip() and not _is_number(cell) for cell in raw.iloc[0]):
        return pd.read_csv(path, header=None).to_numpy(), None
    frame = pd.read_csv(path)  # the first row is a header
    missing = [f for f in features or () if f not in frame.columns]
    if features and not missing:
        frame = frame[list(features)]
    elif features and required:
        raise UsageError(f"{path}: no column {missing[0]!r} in the header ({', '.join(frame.columns)})")
    return frame.to_numpy(), [str(c) for c in frame.columns]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def model_feature_names(model: Any) -> list[str] | None:
    """Column names the model was trained with: our detectors' or scikit-learn's."""
    for attr in ("feature_names_", "feature_names_in_"):
        names = getattr(model, attr, None)
        if names is not None:
            return [str(n) for n in names]
    return None


def model_feature_count(model: Any) -> int | None:
    """``n_features_in_`` of scikit-learn estimators, pipelines, LightGBM and our detectors."""
    n = getattr(model, "n_features_in_", None)
    return int(n) if isinstance(n, int | np.integer) else None


def package_model(
    model_path: Path,
    *,
    name: str,
    version: int,
    key_paths: Sequence[Path],
    out_dir: Path,
    targets: Sequence[str] = TARGETS,
    passphrase: bytes | None = None,
    root_path: Path | None = None,
    calibration_path: Path | None = None,
    features: Sequence[str] | None = None,
    description: str = "",
    expected_band: tuple[float, float] | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> Path:
    from packager.keys import load_private_key, load_root
    from packager.pipeline import load_model

    out_dir = Path(out_dir)
    if not re.fullmatch(NAME_PATTERN, name):
        raise UsageError(f"model name {name!r}: use 1-64 of a-z 0-9 . _ -, starting with a letter or digit")
    if version < 1:
        raise UsageError(f"--version must be >= 1, got {version}")
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        raise UsageError(f"unknown target {unknown[0]!r}: choose from {', '.join(TARGETS)}")
    check_out_dir(out_dir, force)
    keys = [load_private_key(p, passphrase) for p in key_paths]
    root: Root | None = None
    root_path = root_path or _sibling_root(key_paths)
    if root_path is not None:
        root = load_root(root_path)
        check_publisher_keys(keys, root)
    model = load_model(Path(model_path))
    expected = model_feature_count(model)
    if features is not None and expected is not None and len(features) != expected:
        raise UsageError(f"--features names {len(features)} feature(s), the model takes {expected}")
    calibration = None
    if calibration_path:
        names = list(features) if features is not None else model_feature_names(model)
        calibration = load_calibration(Path(calibration_path), names, required=features is not None)
    if calibration is not None:
        want = expected if expected is not None else (len(features) if features else None)
        if want is not None and calibration.shape[1] != want:
            raise UsageError(
                f"{calibration_path}: {calibration.shape[1]} column(s), the model takes {want} feature(s)"
            )
    return build_and_write(
        model, name=name, version=version, targets=targets, keys=keys, root=root, out_dir=out_dir,
        calibration=calibration, features=features, description=description, force=force,
        progress=progress, expected_band=expected_band,
    )


def build_and_write(
    model: Any,
    *,
    name: str,
    version: int,
    targets: Sequence[str],
    keys: Sequence[Any],
    out_dir: Path,
    calibration: NDArray[np.floating] | None = None,
    features: Sequence[str] | None = None,
    description: str = "",
    force: bool = False,
    root: Root | None = None,
    progress: Progress | None = None,
    expected_band: tuple[float, float] | None = None,
) -> Path:
    """Library entry point for an in-memory model (the demo, tests)."""
    from packager.pipeline import build

    task = progress.add_task("building artifacts", total=None) if progress else None

    def say(message: str) -> None:
        if progress is not None and task is not None:
            progress.update(task, description=message)

    with tempfile.TemporaryDirectory(prefix="modelsync-build-") as work:
        result = build(
            model,
            targets=list(targets),
            workdir=Path(work),
            feature_names=list(features) if features else None,
            calibration=calibration,
            progress=say,
        )
        if progress is not None and task is not None:
            built = f"built {len(result.artifacts)} artifact(s)"
            progress.update(task, description=built, total=1, completed=1)
        if calibration is None and progress is not None:
            # a line that stays, not a passing progress message: the user should act on it
            progress.console.print(rows_advice(result.rows_note), soft_wrap=True)
        pool = calibration if calibration is not None else result.rows
        assert pool is not None
        return write_bundle(
            result, name=name, version=version, keys=keys, out_dir=out_dir, golden_rows=pool,
            golden_source=result.rows_source, golden_note=result.rows_note,
            description=description, force=force, root=root, progress=progress,
            expected_band=expected_band,
        )


def rows_advice(note: str) -> str:
    """The one line ``package`` prints when it drew its own rows."""
    return (
        f"no --calibration: parity and golden rows drawn from {note}; "
        "pass --calibration ROWS to check the artifacts against real data"
    )


def _sibling_root(key_paths: Sequence[Path]) -> Path | None:
    """``keys init`` writes root.json beside publisher.key: use it when the caller names none."""
    candidate = Path(key_paths[0]).parent / "root.json" if key_paths else None
    return candidate if candidate is not None and candidate.is_file() else None
