"""A bundle's manifest as readable tables (``modelsync inspect``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.console import Console, Group
from rich.table import Table

from packager.manifest import Artifact, ModelManifest, Parity


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
    if q.applied:
        return f"{q.method}"
    return f"no: {q.reason}" if q.reason else "no"


def _providers(a: Artifact) -> str:
    cpu = "; CPU recommended" if a.ep_plan.cpu_recommended else ""
    return f"{' > '.join(p.removesuffix('ExecutionProvider') for p in a.ep_plan.providers)}{cpu}"


# One row per field, one column per artifact: three targets fit an 80-column terminal.
_FIELDS: list[tuple[str, Callable[[Artifact], str]]] = [
    ("precision", lambda a: a.precision),
    ("size", lambda a: _size(a.length)),
    ("zstd size", lambda a: _size(a.compressed.length) if a.compressed else "-"),
    ("ORT", lambda a: f"{a.ort_version} {a.optimization_style}"),
    ("input shape", lambda a: str(a.input_shape)),
    ("sha256", lambda a: a.sha256[:16] + "…"),
    ("quantized", _quantization),
    ("providers", _providers),
    ("EP plan", lambda a: a.ep_plan.summary),
    ("parity rows", lambda a: str(a.parity.rows)),
    ("label agreement", lambda a: f"{a.parity.label_agreement:.2%}"),
    ("max |Δscore|", lambda a: f"{a.parity.max_abs_score_diff:.2e}"),
    ("mean |Δscore|", lambda a: f"{a.parity.mean_abs_score_diff:.2e}"),
    ("spearman", lambda a: f"{a.parity.spearman:.6f}"),
    ("golden atol", lambda a: f"{a.golden_tolerance.score_atol:.2g}"),
    ("golden flips", lambda a: f"≤ {a.golden_tolerance.max_label_mismatches}"),
]
_SECTION_AFTER = {"sha256", "EP plan", "spearman"}


def artifacts_table(m: ModelManifest) -> Table:
    t = Table(title="artifacts: parity against the scikit-learn reference, golden tolerance")
    t.add_column("", style="bold", no_wrap=True)
    for a in m.artifacts:
        t.add_column(a.target, ratio=1)
    for label, value in _FIELDS:
        t.add_row(label, *(value(a) for a in m.artifacts), end_section=label in _SECTION_AFTER)
    return t


def parity_table(rows: Sequence[tuple[str, str, Parity]], title: str) -> Table:
    """Parity figures, one row per (target, precision, figures)."""
    t = Table(title=title)
    t.add_column("target", no_wrap=True)
    t.add_column("precision", no_wrap=True)
    for col in ("rows", "labels agree", "max |Δ|", "mean |Δ|", "spearman"):
        t.add_column(col, justify="right")
    for target, precision, p in rows:
        t.add_row(
            target, precision, f"{p.rows:,}", f"{p.label_agreement:.2%}",
            f"{p.max_abs_score_diff:.1e}", f"{p.mean_abs_score_diff:.1e}", f"{p.spearman:.5f}",
        )
    return t


def render(m: ModelManifest) -> Group:
    return Group(card_table(m), artifacts_table(m))


def print_manifest(m: ModelManifest, console: Console | None = None) -> None:
    (console or Console()).print(render(m))
