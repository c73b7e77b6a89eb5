"""The packages' shape: no import cycle among our modules, none over the size a reader
can hold, and no part that imports a heavier part it has no use for."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("packager", "sync_service", "device_sim", "modelsync")
MAX_LINES = 520  # "about 500"; generated migrations excepted


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every module of ours that ``name`` imports, at module level or inside a function
    (a lazy import still makes a cycle a reader has to untangle)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = name.split(".") if is_package else name.split(".")[:-1]
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, node.module] if node.module else base_parts)
            else:
                base = node.module or ""
            if base in known:
                out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known)
    out.discard(name)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_among_our_modules() -> None:
    known = _modules()
    graph = {name: _imports(name, path, known) for name, path in known.items()}
    # a package's __init__ importing its own submodules is how a package exposes them
    for name in graph:
        graph[name] = {
            m for m in graph[name] if not (name.startswith(m + ".") and known[m].name == "__init__.py")
        }
    assert _cycles(graph) == []


def test_the_walk_sees_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_is_too_long_to_read() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in _modules().values()
        if "migrations" not in path.parts and (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


@pytest.mark.parametrize(
    ("modules", "forbidden"),
    [
        (
            ["device_sim.cli", "device_sim.updater", "device_sim.trust", "device_sim.store"],
            [
                "sklearn",
                "lightgbm",
                "skl2onnx",
                "onnx",
                "matplotlib",
                "boto3",
                "psycopg",
                "fastapi",
                "sqlmodel",
            ],
        ),
        (["packager.manifest"], ["sklearn", "onnx", "onnxruntime", "numpy", "httpx"]),
    ],
)
def test_a_part_loads_without_the_other_parts_dependencies(modules: list[str], forbidden: list[str]) -> None:
    """What each extra promises (pyproject.toml): imported with the other parts' libraries
    made unimportable, these modules still load."""
    blocker = (
        "import sys\n"
        f"BLOCKED = {forbidden!r}\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ImportError(f'{name} is not in this extra')\n"
        "sys.meta_path.insert(0, Block())\n" + "".join(f"import {m}\n" for m in modules)
    )
    done = subprocess.run(
        [sys.executable, "-c", blocker], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
