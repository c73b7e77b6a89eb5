"""Quoted benchmark figures in the docs, read from and rewritten to the committed results.

A measured figure in a doc is followed at once by an HTML comment naming the result it
quotes, ``13.3k<!-- result index.json index_check/throughput_rps -->``: a file under
benchmarks/results/ and a path of keys (``/``-separated; list items by index). It is
written as ``render`` writes the result in the figure's own format: ``k``/``M``/``MB``/
``kB`` scale it, a time is converted to the figure's unit (``… as µs -->`` where a
table's header carries it), ``%`` of a number is a share (0.109 -> 10.9%), the decimals and the
thousands separators are the figure's, and a result that is text (``"150.9 s (2.5
polls)"``) gives its first number. tests/test_doc_figures.py checks every figure against
``render``; ``python -m tests.doc_figures --update`` (``make doc-figures``) rewrites each
one with it after the benchmarks are re-run, so the check passes after an update.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from packager.fsutil import write_atomic

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCS = sorted([*ROOT.glob("docs/*.md"), ROOT / "README.md", ROOT / "benchmarks" / "README.md"])

MARKED = re.compile(
    r"(?P<num>\d[\d,]*(?:\.\d+)?)\s?(?P<unit>MiB/s|MiB|MB|kB|ms|µs|k/s|k|M|%|x|s)?"
    r"<!-- result (?P<file>\S+) (?P<path>[^>]+?)(?: as (?P<as>µs|ms|s))? -->"
)
SCALE = {"k": 1e3, "k/s": 1e3, "M": 1e6, "MB": 1e6, "kB": 1e3, "%": 0.01}
# a result's time unit is its key's suffix; a figure's is the one written after it, or
# the marker's ``as UNIT`` where a table's header carries it (6.7<!-- … ours_ms as µs -->)
MICROSECONDS = {"s": 1e6, "ms": 1e3, "µs": 1.0}
KEY_UNIT = {"_ms": "ms", "_us": "µs", "_s": "s", "seconds": "s"}


class FigureError(Exception):
    """A marker names a result that is not there, or one that holds no number."""


def lookup(file: str, path: str) -> Any:
    try:
        value: Any = json.loads((RESULTS / file).read_text())
        for key in path.split("/"):
            value = value[int(key)] if isinstance(value, list) else value[key]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise FigureError(f"no result {path!r} in benchmarks/results/{file}: {e!r}") from e
    return value


def render(value: Any, shown: str, unit: str, key: str = "") -> str:
    """``value`` written as ``shown`` is: its decimals, its thousands separators, ``unit``'s scale.

    ``key`` (the result's last key) gives the result's time unit when ``unit`` is one.
    """
    if isinstance(value, str):
        found = re.search(r"\d+(?:\.\d+)?", value.replace(",", ""))
        if found is None:
            raise FigureError(f"the result {value!r} holds no number")
        number = float(found.group(0))
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FigureError(f"the result {value!r} is not a number")
    else:
        number = float(value) / SCALE.get(unit, 1.0)
        source = next((u for suffix, u in KEY_UNIT.items() if key.endswith(suffix)), None)
        if source is not None and unit in MICROSECONDS:
            number = float(value) * MICROSECONDS[source] / MICROSECONDS[unit]
    decimals = len(shown.partition(".")[2])
    return f"{number:{',' if ',' in shown else ''}.{decimals}f}"


def expected(match: re.Match[str]) -> str:
    """The figure ``match`` should show, from the committed result it names."""
    unit = match["as"] or match["unit"] or ""
    return render(lookup(match["file"], match["path"]), match["num"], unit, match["path"].rpartition("/")[2])


def update(text: str) -> str:
    return MARKED.sub(lambda m: expected(m) + m.group(0)[len(m["num"]) :], text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.doc_figures", description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="rewrite the docs' marked figures in place")
    args = parser.parse_args(argv)
    stale = 0
    for doc in DOCS:
        text = doc.read_text()
        try:
            new = update(text)
        except FigureError as e:
            print(f"{doc.relative_to(ROOT)}: {e}", file=sys.stderr)
            return 1
        if new != text:
            stale += 1
            if args.update:
                write_atomic(doc, new.encode())
            print(f"{'updated' if args.update else 'stale'}: {doc.relative_to(ROOT)}")
    return 1 if stale and not args.update else 0


if __name__ == "__main__":
    sys.exit(main())
