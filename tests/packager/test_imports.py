"""The packager's import graph, read from the source (module- and function-level imports):
no cycle among its modules, no module found by string, no optional import of our own code;
and the console script's parser holds every package's subcommands."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import packager
from packager.cli import build_parser

PACKAGE = Path(packager.__file__).parent
OWN = ("packager", "sync_service", "device_sim")


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in PACKAGE.rglob("*.py")}


def _imported(module: str, tree: ast.AST) -> set[str]:
    """The packager modules ``module`` imports, wherever in the file the import is."""
    found: set[str] = set()
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_among_packager_modules() -> None:
    graph = {m: _imported(m, ast.parse(p.read_text(encoding="utf-8"))) for m, p in MODULES.items()}
    assert _cycle(graph) is None


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    caught = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(c, ast.Name) and c.id in ("ImportError", "ModuleNotFoundError") for c in caught)


def test_no_module_imported_by_string_or_optionally() -> None:
    offences = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "import_module":
                offences.append(f"{module}: importlib.import_module")
            if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
                for inner in ast.walk(ast.Module(body=node.body, type_ignores=[])):
                    names = (
                        [inner.module or ""]
                        if isinstance(inner, ast.ImportFrom)
                        else [a.name for a in inner.names]
                        if isinstance(inner, ast.Import)
                        else []
                    )
                    offences += [f"{module}: optional import of {n}" for n in names if n.startswith(OWN)]
    assert offences == [], offences


def test_console_script_lists_every_subcommand() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == [
        "keys", "package", "verify", "inspect",  # packager
        "serve", "admin", "publish", "release", "models", "devices", "pack",  # sync_service
        "device", "fleet", "demo",  # device_sim
        "completion",
    ]
