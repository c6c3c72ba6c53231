"""The docs' tables against the files they cite: every figure in a table row that links evidence in results/ is a
number of one of the files that row links (to the digits the row gives), so that a table cannot drift from its files.
The README's generated blocks have their own check (test_report: drawn again from results/ and compared)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .conftest import ROOT

PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "results" / "README.md"]
LINK = re.compile(r"\[([^\]]*)\]\(([^)#\s]+)[^)]*\)")
CODE = re.compile(r"`[^`]*`")
NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?:e-?\d+)?(?![\w])")


def numbers(text: str) -> set[float]:
    return {float(n.replace(",", "")) for n in NUMBER.findall(text) if n.replace(",", "").replace(".", "").isdigit()
            or "e" in n}  # fmt: skip


def cited_text(path: Path) -> str:
    """A cited file's text, a folder's files together: a JSON file's numbers as it holds them, a CSV's cells apart."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in (".md", ".json", ".csv"))
    texts = []
    for file in files:
        text = file.read_text(encoding="utf-8")
        texts.append(
            {".json": lambda t: json.dumps(json.loads(t)), ".csv": lambda t: t.replace(",", " ")}.get(file.suffix, str)(
                text
            )
        )
    return "\n".join(texts)


def found(figure: str, pool: set[float]) -> bool:
    """Whether a figure as written (``0.1574``, ``13,209,600``, ``31.8``) is a number of the files, to its digits."""
    value = float(figure.replace(",", ""))
    digits = len(figure.split(".")[1]) if "." in figure and "e" not in figure else 0
    return any(round(n, digits) == round(value, digits) for n in pool)


def rows() -> list[tuple[str, int, str, list[Path]]]:
    out = []
    for page in PAGES:
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if not line.startswith("| ") or set(line) <= set("|-: "):
                continue
            cited = [(page.parent / target).resolve() for _, target in LINK.findall(line)]
            cited = [p for p in cited if (ROOT / "results") in p.parents and p.exists()]
            if cited:
                out.append((page.relative_to(ROOT).as_posix(), number, line, cited))
    return out


@pytest.mark.parametrize(
    ("page", "number", "line", "cited"), rows(), ids=lambda v: v if isinstance(v, (str, int)) else ""
)
def test_every_figure_of_a_table_row_is_in_the_files_it_cites(page, number, line, cited) -> None:
    pool = set().union(*(numbers(cited_text(path)) for path in cited))
    text = CODE.sub("", LINK.sub("", line))
    missing = [f for f in NUMBER.findall(text) if not found(f, pool)]
    assert not missing, f"{page}:{number}: {missing} in no file the row cites ({', '.join(p.name for p in cited)})"


@pytest.mark.parametrize("page", [ROOT / "README.md", *PAGES], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    targets = [target for _, target in LINK.findall(page.read_text(encoding="utf-8")) if "://" not in target]
    missing = [target for target in targets if not (page.parent / target).exists()]
    assert not missing, f"{page.name} links to what does not exist: {missing}"
