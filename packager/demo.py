"""Stage 1 of the demo: telemetry → IsolationForest → signed bundle for every target →
verified → parity table. ``modelsync demo`` (device_sim) calls ``run_packaging_demo``
and goes on through the service and devices; ``python -m packager.demo [DIR]`` runs this
stage alone."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from packager.manifest import TARGETS

DEMO_ROWS = 10_000
DEMO_TREES = 300  # as the original StellaSentinal detector
MODEL_NAME = "fleet-iforest"


def ensure_keys(keys_dir: Path) -> Path:
    """``keys_dir`` with keys and root.json, created on first use."""
    from packager.keys import init_keys

    if not (keys_dir / "root.json").is_file():
        init_keys(keys_dir)
    return keys_dir


def run_packaging_demo(workdir: Path, console: Console, *, version: int = 1) -> Path:
    """Package a freshly trained 300-tree IsolationForest for all targets into
    ``workdir/bundle-v{version}`` (replacing it), verify it, print the tables; return it."""
    from packager.cli_bundle import progress_bar
    from packager.detectors import IsolationForestDetector
    from packager.inspect import card_table, parity_table
    from packager.keys import load_private_key, load_root
    from packager.package import build_and_write
    from packager.parity import DEFAULT_THRESHOLDS, measure
    from packager.telemetry import generate_telemetry
    from packager.verify import verify_bundle

    workdir = Path(workdir)
    keys_dir = ensure_keys(workdir / "keys")
    root = load_root(keys_dir / "root.json")
    key = load_private_key(keys_dir / "publisher.key")

    console.rule(f"[bold]1. telemetry and training: {MODEL_NAME} v{version}")
    train = generate_telemetry(DEMO_ROWS, seed=version)
    holdout = generate_telemetry(DEMO_ROWS // 2, seed=1000 + version)
    console.print(
        f"{DEMO_ROWS:,} training rows, {len(train.frame.columns)} features, "
        f"{int(train.is_anomaly.sum())} injected anomalies"
    )
    started = time.perf_counter()
    model = IsolationForestDetector(n_estimators=DEMO_TREES, random_state=version).fit(train.frame)
    console.print(f"trained IsolationForest ({DEMO_TREES} trees) in {time.perf_counter() - started:.1f} s")
    console.print(detection_table(holdout.labels, model.predict(holdout.frame)))

    console.rule(f"[bold]2. package v{version} for " + ", ".join(TARGETS))
    out = workdir / f"bundle-v{version}"
    started = time.perf_counter()
    with progress_bar(console) as progress:
        build_and_write(
            model, name=MODEL_NAME, version=version, targets=TARGETS, keys=[key], root=root,
            out_dir=out, calibration=holdout.frame.to_numpy(), force=True, progress=progress,
            description="demo: fleet telemetry anomaly detector",
        )
    console.print(f"packaged in {time.perf_counter() - started:.1f} s → {out}")

    console.rule(f"[bold]3. verify v{version}")
    with progress_bar(console) as progress:
        report = verify_bundle(out, root, progress=progress)
    console.print(
        f"[green]verified[/green] {MODEL_NAME} v{version}: publisher signature, "
        f"{len(report.manifest.artifacts)} artifact hashes, golden vectors on every artifact",
        soft_wrap=True,
    )
    console.print(card_table(report.manifest))

    console.rule(f"[bold]4. parity of v{version} on held-out telemetry")
    x = holdout.frame.to_numpy()
    rows = [
        (a.target, a.precision, measure(out / a.path, model, x, DEFAULT_THRESHOLDS[a.precision]).parity)
        for a in report.manifest.artifacts
    ]
    console.print(parity_table(rows, f"every artifact vs scikit-learn on {len(x):,} held-out rows"))
    return out


def detection_table(truth: np.ndarray, predicted: np.ndarray) -> Table:
    """How well the detector finds the injected anomalies in held-out telemetry."""
    anomalous, flagged = truth == -1, predicted == -1
    hits = int((anomalous & flagged).sum())
    t = Table(title="held-out telemetry: injected anomalies found")
    for col in ("rows", "injected", "flagged", "recall", "precision"):
        t.add_column(col, justify="right")
    t.add_row(
        str(len(truth)), str(int(anomalous.sum())), str(int(flagged.sum())),
        f"{hits / max(int(anomalous.sum()), 1):.1%}", f"{hits / max(int(flagged.sum()), 1):.1%}",
    )
    return t


if __name__ == "__main__":
    run_packaging_demo(Path(sys.argv[1] if len(sys.argv) > 1 else "demo-out"), Console())
