"""The code stays in parts a reader can hold: no function of the library or the Space over 60 lines, the Trainer
class within 250, and imports that point one way (no module imports one that imports it back)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*ROOT.glob("nanogpt_lib/*.py"), *ROOT.glob("space/*.py")])


def _length(node: ast.AST) -> int:
    return node.end_lineno - node.lineno + 1


def test_sources_are_found():
    assert len(SOURCES) > 20


def test_no_function_over_60_lines():
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({_length(node)} lines)"
        for path in SOURCES
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _length(node) > 60
    ]
    assert not long, long


def test_trainer_within_250_lines():
    tree = ast.parse((ROOT / "nanogpt_lib" / "train.py").read_text())
    (trainer,) = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Trainer"]
    assert _length(trainer) <= 250


def imports_of(path: Path) -> set[str]:
    """The library's modules that a module imports (``from .x import``, ``from . import x``; under TYPE_CHECKING too,
    which a reader follows as well)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module.split(".")[0]} if node.module else {alias.name for alias in node.names}
    return found


def test_the_imports_point_one_way():
    """No module imports one that (through others) imports it back."""
    graph = {path.stem: imports_of(path) for path in ROOT.glob("nanogpt_lib/*.py")}
    graph = {name: deps & set(graph) for name, deps in graph.items()}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(name) :], name]))
        if name not in done:
            for dep in sorted(graph[name]):
                visit(dep, [*path, name])
            done.add(name)

    for name in sorted(graph):
        visit(name, [])
