"""`modelsync package | verify | inspect`: thin handlers over packager.package, verify, inspect."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from packager.cli_common import add_json_arg, passphrase_from, print_json
from packager.manifest import TARGETS


def _band(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not LO,HI: {text!r} (e.g. 0.01,0.15)") from None
    if not 0 <= lo <= hi <= 1:
        raise argparse.ArgumentTypeError(f"the band must be 0 <= LO <= HI <= 1, got {text!r}")
    return lo, hi

def register(sub: Any) -> None:
    pkg = sub.add_parser(
        "package",
        help="convert a trained model into signed, parity-checked ORT artifacts (a bundle)",
        description="Convert MODEL (joblib/pickle you trust: scikit-learn estimator or pipeline, "
        "LightGBM model, or a modelsync detector) into one ORT artifact per target, check each "
        "against the scikit-learn reference, and write a signed bundle to -o DIR.",
    )
    pkg.add_argument("model", type=Path, metavar="MODEL", help="the trained model: a .joblib or .pkl file")
    pkg.add_argument("--name", required=True, help="model name: lowercase letters, digits, . _ -")
    pkg.add_argument("--version", type=int, required=True, metavar="N", help="model version (>= 1)")
    pkg.add_argument(
        "--target", action="append", choices=TARGETS, metavar="TARGET",
        help=f"one of {', '.join(TARGETS)}; repeat for several (default: all)",
    )
    pkg.add_argument(
        "--key", action="append", type=Path, required=True, metavar="PUBLISHER_KEY",
        help="publisher private key (PEM); repeat to meet a threshold",
    )
    pkg.add_argument("--passphrase-env", metavar="VAR", help="read the keys' passphrase from $VAR")
    pkg.add_argument(
        "--root", type=Path,
        help="root.json whose publisher role must accept the keys (default: root.json beside the first key)",
    )
    pkg.add_argument(
        "--calibration", type=Path, metavar="CSV|NPY",
        help="representative rows: INT8 calibration, parity checks and golden vectors",
    )
    pkg.add_argument(
        "--features", metavar="A,B,C", help="comma-separated feature names, in the model's column order"
    )
    pkg.add_argument("--description", default="", metavar="TEXT", help="free text for the model card")
    pkg.add_argument(
        "--expected-anomaly-band", type=_band, metavar="LO,HI",
        help="anomaly rate a device should see in its first rows (e.g. 0.01,0.15); outside it, a device "
        "falls back to its previous model (docs/behaviour.md)",
    )
    pkg.add_argument(
        "-o", "--output", type=Path, required=True, metavar="DIR",
        help="the bundle directory: must not exist or be empty (see --force)",
    )
    pkg.add_argument("--force", action="store_true", help="replace a non-empty DIR")
    add_json_arg(pkg)
    pkg.set_defaults(handler=_package)

    ver = sub.add_parser(
        "verify",
        help="check a bundle completely: signatures, files, hashes, golden vectors",
    )
    ver.add_argument("bundle", type=Path, metavar="DIR", help="the bundle directory `package -o` wrote")
    ver.add_argument("--root", type=Path, required=True, help="trusted root.json")
    ver.add_argument("--skip-golden", action="store_true", help="check signatures and files only")
    add_json_arg(ver)
    ver.set_defaults(handler=_verify)

    ins = sub.add_parser("inspect", help="print a bundle's manifest as tables (signature not checked)")
    ins.add_argument("bundle", type=Path, metavar="DIR", help="the bundle directory `package -o` wrote")
    add_json_arg(ins)
    ins.set_defaults(handler=_inspect)


def progress_bar(console: Any = None) -> Any:
    """The progress display of package and verify (and the demo)."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console
    )


def _package(args: argparse.Namespace) -> int:
    from rich.console import Console

    from packager.package import package_model

    features = [f.strip() for f in args.features.split(",")] if args.features else None
    with progress_bar(Console(stderr=True) if args.json else None) as progress:
        out = package_model(
            args.model,
            name=args.name,
            version=args.version,
            targets=args.target or list(TARGETS),
            key_paths=args.key,
            passphrase=passphrase_from(args),
            root_path=args.root,
            out_dir=args.output,
            calibration_path=args.calibration,
            features=features,
            description=args.description,
            expected_band=args.expected_anomaly_band,
            force=args.force,
            progress=progress,
        )
    if args.json:
        print_json({"bundle": str(out), "name": args.name, "version": args.version})
        return 0
    Console().print(f"wrote bundle {out}", soft_wrap=True)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from rich.console import Console

    from packager.keys import load_root
    from packager.verify import verify_bundle

    root = load_root(args.root)
    with progress_bar(Console(stderr=True) if args.json else None) as progress:
        report = verify_bundle(args.bundle, root, run_golden=not args.skip_golden, progress=progress)
    m = report.manifest
    if args.json:
        print_json({
            "ok": True, "name": m.name, "version": m.version, "artifacts": len(m.artifacts),
            "golden": not args.skip_golden,
            "checks": [{"target": c.target, "precision": c.precision,
                        "max_abs_score_diff": c.deviation.max_abs_score_diff,
                        "label_mismatches": c.deviation.label_mismatches} for c in report.checks],
        })
        return 0
    console = Console()
    for c in report.checks:
        console.print(
            f"  {c.target:<14} {c.precision:<5} golden max |Δscore| {c.deviation.max_abs_score_diff:.2e}, "
            f"{c.deviation.label_mismatches} label flip(s)"
        )
    sel = m.golden.selection
    if sel is not None:
        console.print(
            f"  golden rows: {sel.normal} normal, {sel.anomalous} anomalous, {sel.boundary} at the "
            f"boundary (from {sel.source})", soft_wrap=True,
        )
    what = "signatures and files" if args.skip_golden else "signatures, files and golden vectors"
    summary = f"OK: {m.name} v{m.version}, {len(m.artifacts)} artifact(s); {what} check out"
    console.print(summary, soft_wrap=True)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from packager.inspect import print_manifest
    from packager.verify import load_manifest_unverified

    manifest = load_manifest_unverified(args.bundle)
    if args.json:
        print_json(manifest.model_dump(mode="json"))
        return 0
    from packager.cli_common import console

    print_manifest(manifest, console())
    return 0
