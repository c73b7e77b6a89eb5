"""Figures quoted in the docs are the committed benchmark results' (benchmarks/results/).

A measured figure is followed by ``<!-- result FILE PATH -->`` and must read as
tests/doc_figures.py's ``render`` writes that result (``make doc-figures`` rewrites them
after a benchmark run). In every doc, a measured-looking figure without its comment
(``56x``, ``9.1k/s``, ``48 ms``, ``9.5 µs``) fails too, unless it is

* a target or a bound: ``>= 10x``, ``< 50 ms``, ``target 1.5x``, ``within 30 s``;
* inside ``<!-- not in the results: HOW -->`` … ``<!-- /not in the results -->``: figures
  from A/B runs, profiles or earlier runs that the committed results do not hold, the
  region saying how they were taken (the command, the runs).

Design constants (``16 KiB`` pieces, a ``10%`` rollout, a ``30 s`` TTL) come in units the
check leaves alone (KiB, MiB, %, s); a measured figure in those units is marked all the same.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.doc_figures import DOCS, MARKED, ROOT, FigureError, expected, lookup, main, update

FIGURE = re.compile(
    r"(?<![\w.>=<≥±-])(?P<num>\d[\d,]*(?:\.\d+)?)\s?(?P<unit>x|k/s|/s|ms|µs|ns|MiB/s|MB/s|MB)(?!\w)"
)
TARGET = re.compile(r"(>=|<=|<|>|≥|≤|target|under|within|at most|at least|aim for)\s*$")
ELSEWHERE = re.compile(r"<!-- not in the results: (?P<how>[^>]*?) -->.*?<!-- /not in the results -->", re.S)


def _prose(text: str) -> str:
    """The text outside fenced and indented code blocks."""
    text = re.sub(r"^```.*?^```$", "", text, flags=re.S | re.M)
    return "\n".join(line for line in text.splitlines() if not line.startswith("    "))


def figures() -> list[tuple[str, re.Match[str]]]:
    return [(str(doc.relative_to(ROOT)), m) for doc in DOCS for m in MARKED.finditer(_prose(doc.read_text()))]


def _id(value: object) -> str:
    return value if isinstance(value, str) else value.group(0)[:60]  # type: ignore[attr-defined]


def test_the_docs_that_quote_results_mark_them() -> None:
    marked = {doc for doc, _ in figures()}
    quoting = ["benchmarks/README.md", "docs/fleet.md", "docs/performance.md", "docs/deploy.md"]
    assert {*quoting, "docs/operations.md", "docs/service.md"} <= marked


@pytest.mark.parametrize(("doc", "match"), figures(), ids=_id)
def test_a_quoted_figure_is_the_committed_result(doc: str, match: re.Match[str]) -> None:
    value = lookup(match["file"], match["path"])
    assert match["num"] == expected(match), (
        f"{doc} quotes {match.group(0)!r}, the committed result is {value!r} "
        f"(make doc-figures rewrites it)"
    )


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_measured_figure_without_its_result(doc: Path) -> None:
    prose = _prose(doc.read_text())
    for region in ELSEWHERE.finditer(prose):
        assert region["how"].strip(), f"{doc.name}: a 'not in the results' region must say how"
    text = MARKED.sub("", ELSEWHERE.sub("", prose))
    before = lambda m: text[max(0, m.start() - 12) : m.start()]  # noqa: E731
    loose = [m.group(0) for m in FIGURE.finditer(text) if not TARGET.search(before(m))]
    assert loose == [], f"{doc.name}: figures without a <!-- result … --> comment: {loose}"


def test_the_check_fails_on_a_stale_figure() -> None:
    stale = next(MARKED.finditer("11.9k<!-- result index.json index_check/throughput_rps -->"))
    with pytest.raises(AssertionError, match="the committed result is"):
        test_a_quoted_figure_is_the_committed_result("example", stale)


def test_update_rewrites_a_figure_in_its_own_format() -> None:
    marker = "<!-- result index.json index_check/throughput_rps -->"
    rps = lookup("index.json", "index_check/throughput_rps")
    assert update(f"99.9k{marker}") == f"{rps / 1e3:.1f}k{marker}"
    assert update(f"1,234{marker} a") == f"{rps:,.0f}{marker} a"
    share = "<!-- result index.json nginx/ratio_to_static -->"
    assert update(f"1%{share}") == f"{lookup('index.json', 'nginx/ratio_to_static') * 100:.0f}%{share}"
    with pytest.raises(FigureError, match="no result"):
        update("1x<!-- result index.json no/such/path -->")


def test_the_committed_docs_need_no_update() -> None:
    assert main([]) == 0
