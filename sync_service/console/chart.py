"""The release page's adoption chart as SVG shapes, computed here so the page needs no
charting script: stacked areas of installed, failed, pending and outside devices over time
(the points of ``GET /v1/releases/{id}/adoption``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 10, 28
# bottom to top: what a release engineer reads first sits on the axis
LAYERS = (("installed", "installed"), ("failed", "failed"), ("pending", "pending"), ("outside", "outside"))


@dataclass(frozen=True)
class Layer:
    name: str
    css: str
    points: str  # an SVG polygon's points
    last: int  # the value at the newest point, for the legend


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    layers: list[Layer]
    y_ticks: list[tuple[float, int]]  # (y, devices)
    x_labels: list[tuple[float, str, str]]  # (x, text-anchor, UTC time)
    plot: tuple[float, float, float, float]  # x, y, width, height


def _value(point: dict[str, Any], name: str) -> int:
    value = point[name]
    return sum(value.values()) if isinstance(value, dict) else int(value)


def build(points: list[dict[str, Any]]) -> Chart:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    totals = [sum(_value(p, name) for name, _ in LAYERS) for p in points]
    top = max([1, *totals])
    n = len(points)

    def x(i: int) -> float:
        return LEFT + (plot_w * i / (n - 1) if n > 1 else plot_w)

    def y(v: float) -> float:
        return TOP + plot_h * (1 - v / top)

    below = [0] * n
    layers = []
    for name, css in LAYERS:
        above = [below[i] + _value(p, name) for i, p in enumerate(points)]
        upper = [f"{x(i):.1f},{y(above[i]):.1f}" for i in range(n)]
        lower = [f"{x(i):.1f},{y(below[i]):.1f}" for i in reversed(range(n))]
        if n == 1:  # one moment: a bar at the right edge
            upper.insert(0, f"{LEFT + plot_w - 4:.1f},{y(above[0]):.1f}")
            lower.append(f"{LEFT + plot_w - 4:.1f},{y(below[0]):.1f}")
        layers.append(Layer(name, css, " ".join(upper + lower), _value(points[-1], name) if n else 0))
        below = above
    ticks = sorted({0, top // 2, top})
    labels: list[tuple[float, str, str]] = []
    if n:
        labels.append((x(0), "start", points[0]["at"]))
        if n > 1:
            labels.append((x(n - 1), "end", points[-1]["at"]))
    return Chart(
        width=WIDTH, height=HEIGHT, layers=layers,
        y_ticks=[(y(t), t) for t in ticks], x_labels=labels, plot=(LEFT, TOP, plot_w, plot_h),
    )
