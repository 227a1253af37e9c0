"""The package stays in rooms of a readable size (issue 19): every module under 400
lines, every function under 80, every class under 300; at most 10 top-level entries."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "huimages_wsgi"
LIMITS = {"module": 400, "function": 80, "class": 300}


def oversized() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        where = path.relative_to(PACKAGE.parent)
        if source.count("\n") > LIMITS["module"]:
            found.append(f"{where}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            kind = ("function" if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                    else "class" if isinstance(node, ast.ClassDef) else None)
            if kind and node.end_lineno - node.lineno + 1 > LIMITS[kind]:
                found.append(f"{where}:{node.lineno} {kind} {node.name}")
    return found


def test_no_room_is_over_its_size():
    assert oversized() == []


def test_the_package_shows_its_layers_at_the_top():
    entries = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__")
    assert len(entries) <= 10, entries


def test_every_file_in_contrib_is_there():
    """contrib/ links to the templates it shows: a move must not leave them dangling."""
    contrib = PACKAGE.parent / "contrib"
    dangling = [str(p.relative_to(contrib)) for p in contrib.rglob("*")
                if p.is_symlink() and not p.exists()]
    assert dangling == []
