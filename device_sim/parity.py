"""`modelsync device parity BUNDLE`: every artifact against the scikit-learn reference on
fresh telemetry, as a device would run it.

What is compared, per artifact: label agreement, max and mean |score difference|,
Spearman rank correlation of the scores. A target passes when it meets the tolerance its
own manifest promises devices (``golden_tolerance``): every score within ``score_atol``
of the reference, and no label flip on a row whose reference score lies farther than
``score_atol`` from the decision threshold (a flip right at the threshold is the honest
cost of reduced precision; one far from it is a wrong model).

NNAPI and CoreML do not exist on this machine: every artifact runs on onnxruntime's CPU
provider, which executes the same graph with the same kernels those providers fall back
to for the nodes they cannot take. The output says so rather than pretending.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device_sim.engine import CPU, OnnxEngine, Prediction, SklearnEngine
from packager.errors import BundleError, UsageError
from packager.manifest import ModelManifest, Root

CPU_NOTE = (
    "All artifacts run on onnxruntime's CPU execution provider: it is the honest stand-in for "
    "NNAPI and CoreML on this machine, which has neither (same graph, same CPU kernels those "
    "providers fall back to)."
)


@dataclass(frozen=True)
class TargetParity:
    target: str
    precision: str
    path: str
    provider: str
    rows: int
    label_agreement: float
    label_flips: int
    flips_beyond_tolerance: int
    max_abs_score_diff: float
    mean_abs_score_diff: float
    spearman: float
    score_atol: float
    passed: bool
    why: str


@dataclass(frozen=True)
class ParityReport:
    model: str
    version: int
    rows: int
    seed: int
    data: str
    signature_checked: bool
    targets: list[TargetParity]

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.targets)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["passed"] = self.passed
        return out


def load_bundle_manifest(bundle: Path, root: Root | None) -> ModelManifest:
    from packager.manifest import verify_manifest
    from packager.verify import load_manifest_unverified, read_manifest_json

    if root is None:
        return load_manifest_unverified(bundle)
    return verify_manifest(read_manifest_json(bundle), root)


def fresh_inputs(manifest: ModelManifest, rows: int, seed: int) -> tuple[np.ndarray, str]:
    """New telemetry never seen by the packager (a seed of its own). A model on other
    features gets the golden inputs jittered by their own spread instead, and says so."""
    from packager.telemetry import FEATURES, generate_telemetry

    names = [f.name for f in manifest.model.features]
    if set(names) <= set(FEATURES):
        frame = generate_telemetry(rows, seed=seed).frame
        return frame[names].to_numpy(dtype=np.float32), f"fresh telemetry (seed {seed})"
    golden = np.asarray(manifest.golden.inputs, dtype=np.float64)
    rng = np.random.default_rng(seed)
    base = golden[rng.integers(0, len(golden), rows)]
    spread = golden.std(axis=0) + 1e-3
    x = base + rng.normal(0.0, 0.25, base.shape) * spread
    return x.astype(np.float32), f"golden inputs jittered (seed {seed}; features are not telemetry's)"


def compare(
    ref: Prediction, got: Prediction, threshold: float, score_atol: float
) -> tuple[float, int, int, float, float, float]:
    # the packager's Spearman: a constant score vector has no ranking (scipy returns NaN)
    from packager.parity import spearman

    flips = got.labels != ref.labels
    ref_s = ref.scores.astype(np.float64)
    diff = np.abs(got.scores.astype(np.float64) - ref_s)
    far = np.abs(ref_s - threshold) > score_atol
    rho = spearman(ref_s, got.scores.astype(np.float64))
    return (
        float(1.0 - flips.mean()),
        int(flips.sum()),
        int((flips & far).sum()),
        float(diff.max()) if diff.size else 0.0,
        float(diff.mean()) if diff.size else 0.0,
        rho,
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def run_parity(
    bundle: str | Path, *, rows: int = 5000, seed: int | None = None, root: Root | None = None
) -> ParityReport:
    bundle = Path(bundle)
    if rows < 1:
        raise UsageError(f"--rows must be >= 1, got {rows}")
    manifest = load_bundle_manifest(bundle, root)
    if manifest.reference is None:
        raise BundleError(
            f"{manifest.name} v{manifest.version} has no scikit-learn reference to compare with"
        )
    ref_path = bundle / manifest.reference.path
    if not ref_path.exists():
        raise BundleError(f"{bundle}: reference {manifest.reference.path} is missing")
    seed = seed if seed is not None else secrets.randbelow(2**31)
    x, data = fresh_inputs(manifest, rows, seed)
    names = [f.name for f in manifest.model.features]
    reference = SklearnEngine(ref_path, expected_sha256=manifest.reference.sha256, feature_names=names)
    ref = reference.predict(x)
    threshold = float(manifest.model.threshold)
    results: list[TargetParity] = []
    for art in manifest.artifacts:
        path = bundle / art.path
        if not path.exists():
            raise BundleError(f"{art.target}: artifact {art.path} is missing")
        got_sha = _sha256(path)
        if got_sha != art.sha256:
            raise BundleError(
                f"{art.target}: {art.path} has sha256 {got_sha[:12]}…, manifest says {art.sha256[:12]}…"
            )
        engine = OnnxEngine(path, providers=[CPU], feature_names=names)
        got = engine.predict(x)
        atol = art.golden_tolerance.score_atol
        agree, flips, far, dmax, dmean, rho = compare(ref, got, threshold, atol)
        reasons = []
        if not dmax <= atol:
            reasons.append(f"max |Δscore| {dmax:.3g} > tolerance {atol:.3g}")
        if far:
            reasons.append(f"{far} label flip(s) farther than {atol:.3g} from the threshold")
        results.append(
            TargetParity(
                target=art.target,
                precision=art.precision,
                path=art.path,
                provider=engine.provider,
                rows=len(x),
                label_agreement=agree,
                label_flips=flips,
                flips_beyond_tolerance=far,
                max_abs_score_diff=dmax,
                mean_abs_score_diff=dmean,
                spearman=rho,
                score_atol=atol,
                passed=not reasons,
                why="; ".join(reasons) or "within the manifest's tolerance",
            )
        )
    return ParityReport(
        model=manifest.name,
        version=manifest.version,
        rows=len(x),
        seed=seed,
        data=data,
        signature_checked=root is not None,
        targets=results,
    )


def parity_table(report: ParityReport) -> Any:
    """Fits 80 columns: flips are label disagreements, "(far)" those farther than atol
    from the threshold, which fail the target."""
    from rich import box
    from rich.table import Table

    title = (
        f"parity: {report.model} v{report.version} vs scikit-learn on {report.rows:,} rows of {report.data}"
    )
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 0), collapse_padding=True)
    table.add_column("target", no_wrap=True)
    table.add_column("prec", no_wrap=True)
    for col in ("agree", "flips(far)", "max|Δ|", "mean|Δ|", "spearman", "atol"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("ok", no_wrap=True)
    for t in report.targets:
        table.add_row(
            t.target,
            t.precision,
            f"{t.label_agreement:.2%}",
            f"{t.label_flips}({t.flips_beyond_tolerance})",
            f"{t.max_abs_score_diff:.1e}",
            f"{t.mean_abs_score_diff:.1e}",
            f"{t.spearman:.5f}",
            f"{t.score_atol:.0e}",
            "[green]pass[/]" if t.passed else "[red]FAIL[/]",
        )
    return table


def print_parity(report: ParityReport, console: Any) -> None:
    console.print(parity_table(report))
    for t in report.targets:
        if not t.passed:
            console.print(f"[red]FAIL[/] {t.target} ({t.precision}): {t.why}")
    console.print(CPU_NOTE)
    if not report.signature_checked:
        console.print(
            "manifest signature not checked (give --root KEYS/root.json to check it); "
            "the reference was verified against the manifest's sha256 before loading."
        )
