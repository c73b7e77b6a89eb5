"""Figures quoted in the docs are the committed benchmark results' (benchmarks/results/).

Convention: a measured figure in a doc is followed at once by an HTML comment naming the
result it quotes, ``13.3k<!-- result index.json index_check/throughput_rps -->``: a file
under benchmarks/results/ and a path of keys (``/``-separated; list items by index). The
figure must equal the result rounded as written: ``k``/``M``/``MB`` scale it, ``%`` of a
number is a share (0.109 → 109%), and a result that is text (``"150.9 s (2.5 polls)"``)
gives its first number. In benchmarks/README.md and docs/fleet.md a measured-looking
figure without its comment (``56x``, ``9.1k/s``, ``48 ms``) fails too, unless it is a
target (``>= 10x``, ``< 50 ms``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCS = sorted([*ROOT.glob("docs/*.md"), ROOT / "README.md", ROOT / "benchmarks" / "README.md"])
STRICT = [ROOT / "benchmarks" / "README.md", ROOT / "docs" / "fleet.md"]

MARKED = re.compile(
    r"(?P<num>\d[\d,]*(?:\.\d+)?)\s?(?P<unit>MiB/s|MiB|MB|kB|ms|k/s|k|M|%|x|s)?"
    r"<!-- result (?P<file>\S+) (?P<path>[^>]+?) -->"
)
SCALE = {"k": 1e3, "k/s": 1e3, "M": 1e6, "MB": 1e6, "kB": 1e3, "%": 0.01}
FIGURE = re.compile(r"(?<![\w.>=<≥±-])(?P<num>\d[\d,]*(?:\.\d+)?)\s?(?P<unit>x|k/s|/s|ms|MiB/s|MB)(?!\w)")
TARGET = re.compile(r"(>=|<=|<|>|≥|≤|target)\s*$")


def _lookup(file: str, path: str) -> Any:
    value: Any = json.loads((RESULTS / file).read_text())
    for key in path.split("/"):
        value = value[int(key)] if isinstance(value, list) else value[key]
    return value


def _prose(text: str) -> str:
    """The text outside fenced and indented code blocks."""
    text = re.sub(r"^```.*?^```$", "", text, flags=re.S | re.M)
    return "\n".join(line for line in text.splitlines() if not line.startswith("    "))


def figures() -> list[tuple[str, re.Match[str]]]:
    return [(str(doc.relative_to(ROOT)), m) for doc in DOCS for m in MARKED.finditer(_prose(doc.read_text()))]


def test_the_benchmark_docs_mark_their_figures() -> None:
    marked = {doc for doc, _ in figures()}
    assert {"benchmarks/README.md", "docs/fleet.md"} <= marked


def _id(value: object) -> str:
    return value if isinstance(value, str) else value.group(0)[:60]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("doc", "match"), figures(), ids=_id)
def test_a_quoted_figure_is_the_committed_result(doc: str, match: re.Match[str]) -> None:
    shown = match.group("num").replace(",", "")
    decimals = len(shown.partition(".")[2])
    value = _lookup(match.group("file"), match.group("path"))
    if isinstance(value, str):
        found = re.search(r"\d+(?:\.\d+)?", value.replace(",", ""))
        assert found, f"{doc}: result {match.group('path')!r} is {value!r}, no number in it"
        expected = float(found.group(0))
    else:
        expected = float(value) / SCALE.get(match.group("unit") or "", 1.0)
    # as written: the result rounded to the figure's decimals (a hair of float slack)
    assert abs(float(shown) - expected) <= 0.5 * 10**-decimals + 1e-9, (
        f"{doc} quotes {match.group(0)!r}, the committed result is {value!r}"
    )


@pytest.mark.parametrize("doc", STRICT, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_measured_figure_without_its_result(doc: Path) -> None:
    text = MARKED.sub("", _prose(doc.read_text()))
    before = lambda m: text[max(0, m.start() - 12) : m.start()]  # noqa: E731
    loose = [m.group(0) for m in FIGURE.finditer(text) if not TARGET.search(before(m))]
    assert loose == [], f"{doc.name}: figures without a <!-- result … --> comment: {loose}"


def test_the_check_fails_on_a_stale_figure() -> None:
    stale = next(MARKED.finditer("11.9k<!-- result index.json index_check/throughput_rps -->"))
    with pytest.raises(AssertionError, match="the committed result is"):
        test_a_quoted_figure_is_the_committed_result("example", stale)
