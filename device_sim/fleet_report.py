"""What a fleet run found, written three ways into ``--out``: ``fleet.json`` (every figure),
``convergence.png`` (share of the fleet on each version over time) and ``summary.md``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class BucketCheck:
    """Does the staged rollout hit the percent? ``expected`` is the share of devices whose
    bucket is in (computed from the signed salt, as the devices do); ``observed`` the share
    that installed the version."""

    model: str
    version: int
    percent: float
    devices: int
    expected_share: float
    observed_share: float
    in_bucket: int
    installed_in_bucket: int
    installed_outside: int


@dataclass
class FleetResult:
    devices: int
    duration_s: float
    poll_interval_s: float
    mix: dict[str, dict[str, int]]
    # (seconds since start, {version label: devices})
    timeline: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    bytes_by_kind: dict[str, int] = field(default_factory=dict)
    requests_by_kind: dict[str, int] = field(default_factory=dict)
    failures_by_reason: dict[str, int] = field(default_factory=dict)
    injected: dict[str, int] = field(default_factory=dict)
    unexpected_errors: dict[str, int] = field(default_factory=dict)
    buckets: list[BucketCheck] = field(default_factory=list)
    converged: dict[str, Any] = field(default_factory=dict)
    health_gate: dict[str, Any] = field(default_factory=dict)
    sync_p50_ms: float = 0.0
    sync_p95_ms: float = 0.0
    syncs: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["timeline"] = [{"t": round(t, 3), "versions": v} for t, v in self.timeline]
        return out


def write_plot(result: FleetResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sorted({k for _, v in result.timeline for k in v}, key=_version_order)
    ts = [t for t, _ in result.timeline]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for label in labels:
        share = [100.0 * v.get(label, 0) / max(result.devices, 1) for _, v in result.timeline]
        ax.plot(ts, share, label=label, linewidth=2)
    ax.set_xlabel("seconds since the fleet started")
    ax.set_ylabel("% of fleet")
    ax.set_ylim(-2, 102)
    ax.set_title(f"{result.devices:,} simulated devices, poll every {result.poll_interval_s:g} s")
    ax.grid(alpha=0.3)
    if labels:
        ax.legend(loc="center right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _version_order(label: str) -> tuple[int, str]:
    head, _, num = label.rpartition(" v")
    return (int(num), head) if num.isdigit() else (-1, label)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.1f} {unit}" if unit != "B" else f"{n:,} B"
        value /= 1024
    return f"{n} B"


def summary_markdown(result: FleetResult) -> str:
    lines = [
        f"# Fleet run: {result.devices:,} devices, {result.duration_s:.0f} s",
        "",
        f"Poll interval {result.poll_interval_s:g} s (jittered ±20%). {result.syncs:,} syncs, "
        f"p50 {result.sync_p50_ms:.0f} ms, p95 {result.sync_p95_ms:.0f} ms per sync.",
        "",
        "## Mix",
        "",
        "| facet | value | devices |",
        "| --- | --- | ---: |",
    ]
    for facet, counts in result.mix.items():
        for value, n in sorted(counts.items()):
            lines.append(f"| {facet} | {value} | {n:,} |")
    lines += ["", "## Convergence", ""]
    for key, value in result.converged.items():
        lines.append(f"- {key}: {value}")
    if result.timeline:
        last_t, last = result.timeline[-1]
        ordered = sorted(last.items(), key=lambda kv: _version_order(kv[0]))
        shares = ", ".join(f"{k}: {v:,}" for k, v in ordered)
        lines.append(f"- at {last_t:.0f} s: {shares}")
    lines += ["", "## Rollout buckets (expected from the signed salt vs observed installs)", "",
              "| model | version | percent | expected | observed | installed outside bucket |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for b in result.buckets:
        lines.append(
            f"| {b.model} | {b.version} | {b.percent:g}% | {b.expected_share:.1%} | "
            f"{b.observed_share:.1%} | {b.installed_outside} |"
        )
    lines += ["", "## Bytes moved", "", "| kind | bytes | requests |", "| --- | ---: | ---: |"]
    for kind in sorted(set(result.bytes_by_kind) | set(result.requests_by_kind)):
        size = _size(result.bytes_by_kind.get(kind, 0))
        lines.append(f"| {kind} | {size} | {result.requests_by_kind.get(kind, 0):,} |")
    lines += ["", "## Failures reported, by reason", ""]
    if result.failures_by_reason:
        lines += ["| reason | devices |", "| --- | ---: |"]
        lines += [f"| {r} | {n:,} |" for r, n in sorted(result.failures_by_reason.items())]
    else:
        lines.append("none")
    lines += ["", "## Injected faults", ""]
    lines += [f"- {k}: {v:,}" for k, v in sorted(result.injected.items())] or ["none"]
    lines += ["", "## Unexpected errors", ""]
    lines += [f"- {k}: {v:,}" for k, v in sorted(result.unexpected_errors.items())] or ["none"]
    if result.health_gate:
        lines += ["", "## Health gate", ""]
        lines += [f"- {k}: {v}" for k, v in result.health_gate.items()]
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


def write_report(result: FleetResult, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "fleet.json", "plot": out / "convergence.png", "summary": out / "summary.md"}
    paths["json"].write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    write_plot(result, paths["plot"])
    paths["summary"].write_text(summary_markdown(result))
    return paths
