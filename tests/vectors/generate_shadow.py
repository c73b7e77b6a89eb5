"""The shadow-run vectors (docs/behaviour.md "Shadow runs"), written into tests/vectors/shadow.json
by tests/vectors/generate.py.

``windows``: rows scored by the active model and the held candidate, in the calls a device
made, and the agreement window's report; ``pick``: which shadow entry a device holds (check
2.7 of docs/device.md). The expected values are computed here from the plain definitions
(ranks by counting, Pearson by its formula) and by hand, never by either client's code.
"""

from __future__ import annotations

import math
from typing import Any

from packager.rollout import rollout_bucket

RANK_PAIRS_MAX = 2000


def _ranks(values: list[float]) -> list[float]:
    """Mean rank (1-based) of each value: 1 + how many are smaller + (equal ones - 1) / 2."""
    return [1 + sum(w < v for w in values) + (sum(w == v for w in values) - 1) / 2 for v in values]


def _spearman(pairs: list[tuple[float, float]]) -> float | None:
    if len(pairs) < 2:
        return None
    a, b = _ranks([p[0] for p in pairs]), _ranks([p[1] for p in pairs])
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a)
    vb = sum((y - mb) ** 2 for y in b)
    if va == 0 or vb == 0:
        return None
    return round(sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True)) / math.sqrt(va * vb), 6)


def _expected(calls: list[list[list[float]]]) -> dict[str, Any]:
    rows = [row for call in calls for row in call]
    pairs = [(r[0], r[2]) for r in rows][:RANK_PAIRS_MAX]
    return {
        "rows": len(rows),
        "agree": sum(r[1] == r[3] for r in rows),
        "active_anomalies": sum(r[1] == -1 for r in rows),
        "shadow_anomalies": sum(r[3] == -1 for r in rows),
        "rank_pairs": len(pairs),
        "rank_correlation": _spearman(pairs),
    }


def _row(active: float, shadow: float, threshold: float = 0.0) -> list[float]:
    """[active_score, active_label, shadow_score, shadow_label]; a score below the threshold
    is an anomaly (-1), as the manifests' decision scores are."""
    return [active, -1 if active < threshold else 1, shadow, -1 if shadow < threshold else 1]


def build_windows() -> list[dict[str, Any]]:
    cases: list[tuple[str, list[list[list[float]]]]] = [
        ("one row", [[_row(0.1, 0.2)]]),
        ("same order, other scale", [[_row(x / 10, x / 5 - 0.3) for x in range(-3, 7)]]),
        ("reversed order", [[_row(x / 10, -x / 10) for x in range(-4, 6)]]),
        ("ties on both sides", [[_row(0.1, 0.3), _row(0.1, 0.3), _row(-0.2, 0.3), _row(0.4, -0.1),
                                 _row(0.4, 0.2)]]),
        ("candidate constant: no correlation", [[_row(x / 10, -0.5) for x in range(5)]]),
        ("active constant: no correlation", [[_row(0.25, x / 10) for x in range(-2, 3)]]),
        ("several calls make one window", [[_row(0.1, 0.1), _row(-0.3, -0.2)], [_row(0.2, -0.4)],
                                           [_row(-0.1, 0.3), _row(0.5, 0.6), _row(0.0, 0.05)]]),
        ("every row anomalous for the candidate only", [[_row(0.05 * k, -1 - 0.01 * k) for k in range(8)]]),
        ("zero score counts as normal", [[_row(0.0, -0.0), _row(-1e-9, 1e-9)]]),
    ]
    # a long window: the correlation uses its first 2,000 pairs only; after them the
    # candidate's order is reversed, which must not change the figure
    head = [_row(((k * 37) % 101) / 100 - 0.3, ((k * 37) % 101) / 50 - 0.5) for k in range(RANK_PAIRS_MAX)]
    tail = [_row(k / 100, -k / 100) for k in range(150)]
    cases.append(("past 2000 pairs", [head[:1200], head[1200:], tail]))
    return [{"name": name, "calls": calls, "expected": _expected(calls)} for name, calls in cases]


def _entry(version: int, percent: float, salt: str) -> dict[str, Any]:
    return {"version": version, "rollout": {"percent": percent, "salt": salt}}


def build_pick() -> list[dict[str, Any]]:
    """Check 2.7: the first shadow entry covering the device, above what it runs, not failed."""
    out = []
    for name, entries, device, runs, failed in (
        ("in bucket", [_entry(3, 100.0, "s1")], "pump-0001", 2, []),
        ("no shadow entries", [], "pump-0001", 2, []),
        ("not above what it runs", [_entry(3, 100.0, "s1")], "pump-0001", 3, []),
        ("known bad", [_entry(3, 100.0, "s1")], "pump-0001", 2, [3]),
        ("nothing installed yet", [_entry(1, 100.0, "s1")], "pump-0001", 0, []),
        ("outside the bucket", [_entry(3, 0.0, "s1")], "pump-0001", 2, []),
        ("half the fleet a", [_entry(4, 50.0, "half")], "pump-0002", 2, []),
        ("half the fleet b", [_entry(4, 50.0, "half")], "pump-0003", 2, []),
        ("half the fleet c", [_entry(4, 50.0, "half")], "pump-0004", 2, []),
        ("half the fleet d", [_entry(4, 50.0, "half")], "pump-0005", 2, []),
        ("first covering entry wins", [_entry(5, 0.0, "s5"), _entry(4, 100.0, "s4")], "pump-0001", 2, []),
    ):
        chosen = None
        for e in entries:
            if rollout_bucket(e["rollout"]["salt"], device) < e["rollout"]["percent"] * 100:
                chosen = e
                break
        # a device that runs nothing has nothing to compare a candidate with
        expected = chosen["version"] if chosen and runs and chosen["version"] > runs \
            and chosen["version"] not in failed else None
        out.append({"name": name, "entries": entries, "device_id": device, "runs_version": runs,
                    "failed": failed, "expected_version": expected})
    return out


def build() -> dict[str, Any]:
    return {
        "notice": "Written by tests/vectors/generate.py (generate_shadow.py); read by "
                  "tests/device_sim/test_shadow.py and react-native-stub/test/shadow.test.ts.",
        "rank_pairs_max": RANK_PAIRS_MAX,
        "windows": build_windows(),
        "pick": build_pick(),
    }
