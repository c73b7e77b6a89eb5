"""docs/security.md cites a test for every defence: each cited test must exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = re.compile(r"(tests/[\w/]+\.py)::(test_\w+)")


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    }


def test_every_cited_test_exists() -> None:
    text = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    cited = REFERENCE.findall(text)
    assert len(cited) >= 30
    missing = [f"{f}::{t}" for f, t in cited if not (ROOT / f).is_file() or t not in _test_names(ROOT / f)]
    assert not missing, missing
