"""A bundle's manifest as readable tables (``modelsync inspect``)."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table

from packager.manifest import Artifact, ModelManifest


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / (1024 * 1024):.1f} MiB"


def card_table(m: ModelManifest) -> Table:
    card = m.model
    t = Table(title=f"{m.name} v{m.version}  (created {m.created})", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value")
    t.add_row("family", card.family)
    t.add_row("framework", f"{card.framework} {card.framework_version}")
    if card.description:
        t.add_row("description", card.description)
    t.add_row("features", ", ".join(f.name for f in card.features))
    t.add_row("input", f"{card.input.name}: {card.input.dtype} {card.input.shape}")
    for out in card.outputs:
        t.add_row("output", f"{out.name}: {out.dtype} {out.shape}  {out.meaning}".rstrip())
    t.add_row("threshold", f"score < {card.threshold:g} is an anomaly")
    if card.training_data_sha256:
        t.add_row("training data", card.training_data_sha256)
    t.add_row("golden vectors", f"{len(m.golden.inputs)} rows")
    if m.reference is not None:
        t.add_row("reference", f"{m.reference.path} ({_size(m.reference.length)})")
    return t


def _quantization(a: Artifact) -> str:
    q = a.quantization
    return f"{q.method or 'applied'}" if q.applied else f"no: {q.reason}" if q.reason else "no"


def artifacts_table(m: ModelManifest) -> Table:
    t = Table(title="artifacts")
    for col in ("target", "precision", "size", "zstd", "ORT", "input", "quantized", "EP plan", "sha256"):
        t.add_column(col, overflow="fold")
    for a in m.artifacts:
        t.add_row(
            a.target,
            a.precision,
            _size(a.length),
            _size(a.compressed.length) if a.compressed else "-",
            f"{a.ort_version} {a.optimization_style}",
            str(a.input_shape),
            _quantization(a),
            a.ep_plan.summary,
            a.sha256[:16] + "…",
        )
    return t


def parity_table(m: ModelManifest) -> Table:
    t = Table(title="parity against the scikit-learn reference, and the golden tolerance")
    for col in ("target", "precision", "rows", "label agreement", "max |Δscore|", "mean |Δscore|",
                "spearman", "golden atol", "golden label flips"):
        t.add_column(col, justify="right")
    for a in m.artifacts:
        p, g = a.parity, a.golden_tolerance
        t.add_row(
            a.target,
            a.precision,
            str(p.rows),
            f"{p.label_agreement:.4%}",
            f"{p.max_abs_score_diff:.2e}",
            f"{p.mean_abs_score_diff:.2e}",
            f"{p.spearman:.6f}",
            f"{g.score_atol:.2g}",
            f"≤ {g.max_label_mismatches}",
        )
    return t


def render(m: ModelManifest) -> Group:
    return Group(card_table(m), artifacts_table(m), parity_table(m))


def print_manifest(m: ModelManifest, console: Console | None = None) -> None:
    (console or Console()).print(render(m))
