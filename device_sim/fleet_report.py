"""What a fleet run found: the analysis of what ``device_sim.fleet`` observed (rollout
buckets, convergence, the health gate), written three ways into ``--out``: ``fleet.json``
(every figure), ``convergence.png`` (share of the fleet on each version over time) and
``summary.md``."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from packager.rollout import rollout_bucket

# (seen at, index version, its entries), in the order the fleet's observer read them
IndexHistory = list[tuple[float, int, list["IndexEntryView"]]]
# (device id, model, version) -> what it is about
InstallKey = tuple[str, str, int]


@dataclass
class IndexEntryView:
    model: str
    version: int
    percent: float
    salt: str


class DeviceView(Protocol):
    """What the analysis reads of a simulated device."""

    device_id: str
    platform: str
    network: str
    installed: dict[str, int]


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
    # (seconds since start, what happened): release steps and halts, drawn on the plot
    marks: list[tuple[float, str]] = field(default_factory=list)

    def mark(self, t: float, what: str) -> None:
        self.marks.append((t, what))

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
    fig, ax = plt.subplots(figsize=(9.5, 4.5), dpi=110)
    for label in labels:
        share = [100.0 * v.get(label, 0) / max(result.devices, 1) for _, v in result.timeline]
        ax.plot(ts, share, label=label, linewidth=2)
    for t, what in result.marks:
        halt = "halt" in what
        ax.axvline(t, color="#b42318" if halt else "#5b6473", linestyle="--", linewidth=1, alpha=0.8)
        ax.text(t, 99, f" {what}", rotation=90, va="top", ha="right", fontsize=8,
                color="#b42318" if halt else "#5b6473")
    ax.set_xlabel("seconds since the fleet started")
    ax.set_ylabel("% of fleet")
    ax.set_ylim(-2, 102)
    ax.set_title(f"{result.devices:,} simulated devices, poll every {result.poll_interval_s:g} s")
    ax.grid(alpha=0.3)
    if labels:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
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


# --------------------------------------------------------------------------- analysis


def bucket_checks(
    index_versions: IndexHistory,
    phase_last: dict[tuple[str, int, float], tuple[float, dict[str, int]]],
    install_index: dict[InstallKey, int | None],
    pool: Sequence[DeviceView],
) -> list[BucketCheck]:
    """One check per staged (0 < percent < 100) entry seen, from the sample taken as that
    phase ended."""
    seen: dict[tuple[str, int, float], IndexEntryView] = {}
    for _, _, entries in index_versions:
        for e in entries:
            seen[(e.model, e.version, e.percent)] = e
    out: list[BucketCheck] = []
    for key, e in seen.items():
        if e.percent >= 100 or e.percent <= 0 or key not in phase_last:
            continue
        _, snap = phase_last[key]
        in_bucket = {d.device_id for d in pool if rollout_bucket(e.salt, d.device_id) < e.percent * 100}
        label = f"{e.model} v{e.version}"
        installed = [d for d in pool if d.installed.get(e.model, 0) >= e.version]
        out.append(
            BucketCheck(
                model=e.model,
                version=e.version,
                percent=e.percent,
                devices=len(pool),
                expected_share=len(in_bucket) / max(len(pool), 1),
                observed_share=snap.get(label, 0) / max(len(pool), 1),
                in_bucket=len(in_bucket),
                installed_in_bucket=sum(d.device_id in in_bucket for d in installed),
                installed_outside=_outside_installs(e, in_bucket, index_versions, install_index),
            )
        )
    return out


def _outside_installs(
    e: IndexEntryView, in_bucket: set[str], index_versions: IndexHistory,
    install_index: dict[InstallKey, int | None],
) -> int:
    """Devices outside the bucket that installed the version from an index listing it at
    this percent (judged by the index version each device actually acted on)."""
    listed = {
        version
        for _, version, es in index_versions
        if any((x.model, x.version, x.percent) == (e.model, e.version, e.percent) for x in es)
    }
    return sum(
        1
        for (device_id, model, version), index_version in install_index.items()
        if (model, version) == (e.model, e.version)
        and device_id not in in_bucket
        and index_version in listed
    )


def convergence(
    index_versions: IndexHistory,
    timeline: list[tuple[float, dict[str, int]]],
    pool: Sequence[DeviceView],
    install_at: dict[InstallKey, float],
    poll_interval_s: float,
) -> dict[str, Any]:
    """How long the last release seen at 100% took to reach 95, 99 and 100% of ``pool``."""
    c: dict[str, Any] = {}
    full = [(t, e) for t, _, es in index_versions for e in es if e.percent >= 100]
    if not full:
        c["release at 100%"] = "none observed"
        return c
    _, e = full[-1]
    first = next(t for t, x in full if (x.model, x.version) == (e.model, e.version))
    label = f"{e.model} v{e.version}"
    reached: dict[str, float | None] = {"95%": None, "99%": None, "100%": None}
    for t, snap in timeline:
        if t < first:
            continue
        share = snap.get(label, 0) / max(len(pool), 1)
        for k, need in (("95%", 0.95), ("99%", 0.99), ("100%", 1.0)):
            if reached[k] is None and share >= need - 1e-9:
                reached[k] = t - first
    on_it = sum(d.installed.get(e.model) == e.version for d in pool) / max(len(pool), 1)
    c["release"] = label
    c["eligible devices (current onnxruntime)"] = len(pool)
    c["on it at the end"] = f"{on_it:.2%}"
    for k, v in reached.items():
        c[f"time to {k} of eligible"] = in_polls(v, poll_interval_s)
    for network in sorted({d.network for d in pool}):
        group = [d for d in pool if d.network == network]
        times = [install_at.get((d.device_id, e.model, e.version)) for d in group]
        done = [t - first for t in times if t is not None]
        c[f"{network}: last device on it"] = (
            in_polls(max(done), poll_interval_s)
            if len(done) == len(group)
            else f"{len(done)} of {len(group)} by the end"
        )
    return c


def in_polls(seconds: float | None, poll_interval_s: float) -> str:
    if seconds is None:
        return "not reached"
    return f"{seconds:.1f} s ({seconds / poll_interval_s:.1f} poll intervals)"


def health_gate(
    index_versions: IndexHistory,
    golden_failed_by_version: dict[tuple[str, int], Counter[str]],
    devices: Sequence[DeviceView],
) -> dict[str, Any]:
    """Per version that failed golden vectors somewhere: where, and whether the service
    withdrew it from the index (and when)."""
    listed: dict[tuple[str, int], tuple[float, float | None]] = {}
    for t, _, entries in index_versions:
        keys = {(e.model, e.version) for e in entries}
        for k in keys:
            if k not in listed:
                listed[k] = (t, None)
        for k, (first, gone) in list(listed.items()):
            if k not in keys and gone is None:
                listed[k] = (first, t)
    gate: dict[str, Any] = {}
    for (model, version), by_platform in golden_failed_by_version.items():
        seen = listed.get((model, version))
        listed_at: float | None = seen[0] if seen else None
        withdrawn: float | None = seen[1] if seen else None
        gate[f"{model} v{version}"] = {
            "golden_failed devices by platform": dict(by_platform),
            "installed elsewhere": sum(d.installed.get(model) == version for d in devices),
            "first in index at": None if listed_at is None else round(listed_at, 1),
            "withdrawn from index at": None if withdrawn is None else round(withdrawn, 1),
            "halted": withdrawn is not None,
        }
    return gate
