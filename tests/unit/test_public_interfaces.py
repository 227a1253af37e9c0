"""Other libraries are used through their public interfaces only (issue 20).

Read from the source of every module: no import from ``gunicorn.workers``, no
private name (one leading underscore) imported from, read on, or defined in a
subclass of another library, and no assignment into another library's module
or class (monkeypatching). Pins are then for reproducibility, never because the
code reaches into internals.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "huimages_wsgi"
#: Names with a leading underscore that are documented public interfaces.
DOCUMENTED = {"_exit"}  # os._exit: https://docs.python.org/3/library/os.html#os._exit


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _external_names(tree: ast.Module) -> set[str]:
    """Local names bound to another library's modules, classes or functions."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not alias.name.startswith("huimages_wsgi"):
                    names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                not node.module.startswith("huimages_wsgi"):
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def reaches_into(source: str, where: str = "<source>") -> list[str]:
    """Every place ``source`` uses another library other than through its public names."""
    tree = ast.parse(source)
    external = _external_names(tree)
    found = []

    def on_external(node: ast.AST) -> bool:
        while isinstance(node, ast.Attribute):
            node = node.value
        return isinstance(node, ast.Name) and node.id in external

    for node in ast.walk(tree):
        line = f"{where}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("gunicorn.workers"):
                found.append(f"{line} imports from {node.module}")
            if any(_private(part) for part in node.module.split(".")):
                found.append(f"{line} imports the private module {node.module}")
            found += [f"{line} imports {node.module}.{a.name}"
                      for a in node.names if _private(a.name)]
        elif isinstance(node, ast.Import):
            found += [f"{line} imports {a.name}" for a in node.names
                      if a.name.startswith("gunicorn.workers")
                      or any(_private(p) for p in a.name.split("."))]
        elif isinstance(node, ast.Attribute) and _private(node.attr) and \
                node.attr not in DOCUMENTED and on_external(node.value):
            found.append(f"{line} uses the private {node.attr}")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found += [f"{line} assigns into another library" for t in targets
                      if isinstance(t, ast.Attribute) and on_external(t.value)]
        elif isinstance(node, ast.ClassDef) and any(on_external(b) for b in node.bases):
            found += [f"{line} {node.name} overrides {item.name}" for item in node.body
                      if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
                      and _private(item.name)]
    return found


def test_no_module_reaches_into_another_library():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += reaches_into(path.read_text(), str(path.relative_to(PACKAGE.parent)))
    assert found == []


@pytest.mark.parametrize("source", [
    "from gunicorn.workers.gthread import TConn",
    "import gunicorn.workers.gthread",
    "from flup.server import preforkserver\npreforkserver.select = None",
    "from flup.server.fcgi import WSGIServer\n"
    "class S(WSGIServer):\n    def _sanitizeEnv(self, environ): pass",
    "from PIL import Image\nImage._decompression_bomb_check((1, 1))",
    "import PIL.Image\nPIL.Image.MAX_IMAGE_PIXELS = None",
    "from granian._internal import x",
    "from gunicorn.http.parser import _private",
])
def test_each_way_of_reaching_in_is_found(source):
    assert reaches_into(source)


def test_public_use_is_fine():
    assert reaches_into(
        "from flup.server.fcgi import WSGIServer\nfrom PIL import Image\n"
        "class S(WSGIServer):\n    def run(self): return Image.MAX_IMAGE_PIXELS\n"
        "def f(x): x._own = 1; return x.__class__\n") == []
