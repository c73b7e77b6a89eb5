"""bench_inference's figures: onnxruntime profiles, the issue-14 targets, markdown, PNG."""

from __future__ import annotations

import importlib.metadata
import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PROFILE_BATCHES = (1, 100, 10000)


def versions() -> dict[str, str]:
    out = {}
    for dist in (
        "onnxruntime",
        "scikit-learn",
        "lightgbm",
        "skl2onnx",
        "onnxmltools",
        "hummingbird-ml",
        "torch",
        "treelite",
        "tl2cgen",
        "lleaves",
        "llvmlite",
    ):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _profile(
    session_factory: Callable[..., Any], path: Path, providers: list[str] | None, X: np.ndarray, calls: int
) -> list[dict[str, Any]]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        session = session_factory(path, providers, profile=str(Path(tmp) / "profile"))
        name = session.get_inputs()[0].name
        for _ in range(calls):
            session.run(None, {name: X})
        events: list[dict[str, Any]] = json.loads(Path(session.end_profiling()).read_text())
    return [e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")]


def node_placement(
    session_factory: Callable[..., Any], path: Path, providers: list[str], X: np.ndarray
) -> dict[str, str]:
    """node name (op type) -> the execution provider that ran it, from one profiled run."""
    placement = {}
    for e in _profile(session_factory, path, providers, X, 1):
        node = str(e["name"]).removesuffix("_kernel_time")
        placement[f"{node} ({e['args'].get('op_name', '?')})"] = str(e["args"].get("provider", "?"))
    return placement


def _identity_model(n_features: int) -> bytes:
    from onnx import TensorProto, helper

    from packager.convert.outputs import input_info, make_model

    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", n_features])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["out"])], "empty", [input_info(n_features)], [out]
    )
    return bytes(make_model(graph).SerializeToString())


def _median_call_us(session: Any, X: np.ndarray, calls: int) -> float:
    name = session.get_inputs()[0].name
    session.run(None, {name: X})
    walls = []
    for _ in range(calls):
        t0 = time.perf_counter()
        session.run(None, {name: X})
        walls.append(time.perf_counter() - t0)
    return float(np.median(walls) * 1e6)


def profile_nodes(
    session_factory: Callable[..., Any], path: Path, pool: np.ndarray, batch_sizes: list[int]
) -> list[dict[str, Any]]:
    """Per batch size: the call's median µs, an empty graph's (one Identity: what any
    session.run from Python costs), and each operator's median kernel µs from
    onnxruntime's profiler (whole µs: sub-µs kernels read as 0 or 1)."""
    rows = []
    for batch in [b for b in PROFILE_BATCHES if b in batch_sizes]:
        X = np.ascontiguousarray(pool[:batch])
        calls = max(5, min(300, 30000 // batch))
        per_node: dict[tuple[str, str], list[float]] = defaultdict(list)
        for e in _profile(session_factory, path, None, X, calls):
            per_node[(str(e["name"]), str(e["args"].get("op_name", "?")))].append(float(e["dur"]))
        per_op: dict[str, float] = defaultdict(float)
        for (_, op), durs in per_node.items():
            per_op[op] += float(np.median(durs))
        call = _median_call_us(session_factory(path, None), X, calls)
        empty = _median_call_us(session_factory(_identity_model(X.shape[1]), None), X, calls)
        ops = dict(sorted(per_op.items(), key=lambda kv: -kv[1]))
        rows.append({"batch": batch, "call_us": call, "empty_call_us": empty, "kernels_us": ops})
    return rows


def targets(results: dict[str, Any], wanted: dict[int, float]) -> list[dict[str, Any]]:
    pipe = results["cases"].get("pipeline")
    if not pipe:
        return []
    ratios = pipe["speedups"]["ours fp32"]
    return [
        {
            "target": f"pipeline: ours vs scikit-learn at batch {b} >= {need:g}x",
            "measured": ratios[str(b)],
            "met": ratios[str(b)] >= need,
        }
        for b, need in wanted.items()
        if str(b) in ratios
    ]


def _fmt_ratio(x: float) -> str:
    return f"{x:.0f}x" if x >= 100 else f"{x:.1f}x" if x >= 10 else f"{x:.2f}x"


def markdown(results: dict[str, Any]) -> str:
    v = results["versions"]
    start, end = results["load_average_start"][0], results["load_average_end"][0]
    load = f"load average {start:.1f} at the start, {end:.1f} at the end"
    lines = [
        "# Inference benchmark",
        "",
        f"`{results['command']}`  ",
        f"{results['machine']}, one thread per engine, {load}, {results['when']}, "
        f"{results['seconds']:.0f} s in all  ",
        "versions: " + ", ".join(f"{k} {x}" for k, x in v.items()),
        "",
        "p50 = median ms per call over interleaved rounds; speed-up = reference p50 / engine p50, "
        "measured side by side in this run.",
        "",
    ]
    if results["targets"]:
        lines += ["## Issue 14 targets", "", "| target | measured | met |", "|---|---:|---|"]
        lines += [
            f"| {t['target']} | {_fmt_ratio(t['measured'])} | {'yes' if t['met'] else 'NO'} |"
            for t in results["targets"]
        ]
        lines.append("")
    bs = results["batch_sizes"]
    for case, info in results["cases"].items():
        lines += [f"## {case}", ""]
        if "build_seconds" in info:
            lines += [f"pipeline.build, three targets: {info['build_seconds']:.2f} s", ""]
        for name, note in info["notes"].items():
            lines.append(f"- {name}: {note}")
        lines += [
            "",
            f"| speed-up vs {info['reference']} | " + " | ".join(str(b) for b in bs) + " |",
            "|---|" + "---:|" * len(bs),
        ]
        for name, ratios in info["speedups"].items():
            lines.append(f"| {name} | " + " | ".join(_fmt_ratio(ratios[str(b)]) for b in bs) + " |")
        lines += [
            "",
            "| engine | batch | p50 ms | p95 ms | mean ms | rows/s | calls |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in info["timings"]:
            lines.append(
                f"| {r['engine']} | {r['batch']} | {r['p50_ms']:.4g} | {r['p95_ms']:.4g} | "
                f"{r['mean_ms']:.4g} | {r['rows_per_s']:.4g} | {r['calls']} |"
            )
        if info.get("where_time_goes"):
            lines += [
                "",
                "Where the artifact's time goes (µs per call; onnxruntime profiler, CPU provider):",
                "",
                "| batch | call | empty graph's call | kernels (median µs, whole µs resolution) |",
                "|---:|---:|---:|---|",
            ]
            for w in info["where_time_goes"]:
                ops = ", ".join(f"{op} {us:.3g}" for op, us in w["kernels_us"].items())
                lines.append(f"| {w['batch']} | {w['call_us']:.4g} | {w['empty_call_us']:.3g} | {ops} |")
        if info.get("gpu"):
            lines += ["", f"--gpu: {json.dumps(info['gpu'])}"]
        lines.append("")
    if results.get("sweeps"):
        lines += [
            "## Sweeps (bare IsolationForest, 100 trees unless varied; ours = to_onnx graph)",
            "",
            "| sweep | value | max depth | batch | sklearn ms | ours ms | speed-up |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in results["sweeps"]:
            lines.append(
                f"| {r['sweep']} | {r['value']} | {r['max_depth']} | {r['batch']} | {r['sklearn_ms']:.4g} "
                f"| {r['ours_ms']:.4g} | {_fmt_ratio(r['speedup'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(results["cases"])
    sweeps = sorted({r["sweep"] for r in results.get("sweeps", [])})
    ncols = max(len(cases), len(sweeps), 1)
    nrows = 2 if sweeps else 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 4.0 * nrows), squeeze=False)
    for ax, case in zip(axes[0], cases, strict=False):
        rows = results["cases"][case]["timings"]
        for engine in dict.fromkeys(r["engine"] for r in rows):
            pts = [(r["batch"], r["p50_ms"] / r["batch"] * 1e3) for r in rows if r["engine"] == engine]
            ax.plot(
                *zip(*pts, strict=True),
                marker="o",
                label=engine,
                linewidth=2.5 if engine == "ours fp32" else 1.2,
            )
        ax.set(xscale="log", yscale="log", xlabel="batch size (rows)", ylabel="µs per row (p50)", title=case)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax, name in zip(axes[1] if sweeps else [], sweeps, strict=False):
        rows = [r for r in results["sweeps"] if r["sweep"] == name]
        x_of = "max_depth" if name == "depth" else "value"
        for batch, colour in ((1, "tab:blue"), (1000, "tab:green")):
            pts = sorted(
                (r[x_of], r["ours_ms"] / batch * 1e3, r["sklearn_ms"] / batch * 1e3)
                for r in rows
                if r["batch"] == batch
            )
            xs = [p[0] for p in pts]
            ax.plot(xs, [p[1] for p in pts], marker="o", color=colour, label=f"ours, batch {batch}")
            ax.plot(
                xs,
                [p[2] for p in pts],
                marker="x",
                linestyle="--",
                color=colour,
                label=f"sklearn, batch {batch}",
            )
        label = {"trees": "trees", "depth": "max depth (max_samples 64..4000)", "features": "features"}[name]
        ax.set(
            xscale="log" if name == "trees" else "linear",
            yscale="log",
            xlabel=label,
            ylabel="µs per row (p50)",
            title=f"sweep: {name} (IsolationForest)",
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for row in axes:
        for ax in row:
            if not ax.has_data():
                ax.set_visible(False)
    fig.suptitle(f"inference, one thread per engine, onnxruntime {results['onnxruntime']}, {results['when']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_summary(results: dict[str, Any], say: Callable[[str], None]) -> None:
    for case, info in results["cases"].items():
        extra = f" (build, three targets: {info['build_seconds']:.2f} s)" if "build_seconds" in info else ""
        say(f"{case}{extra}, vs {info['reference']}:")
        for name, ratios in info["speedups"].items():
            say(f"  {name}: " + ", ".join(f"batch {b}: {_fmt_ratio(r)}" for b, r in ratios.items()))
    for t in results["targets"]:
        say(f"  {'met' if t['met'] else 'MISSED'} {t['target']}: {_fmt_ratio(t['measured'])}")
