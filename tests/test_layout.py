"""The code stays in parts a reader can hold: no function of the library or the Space over 60 lines, the Trainer
class within 250."""

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
