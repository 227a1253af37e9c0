"""Every command in README.md, docs/ and contrib/ is run by a test (tests/docs.py)."""

from __future__ import annotations

import re

from ..docs import REPO, RUNNABLE, all_blocks

KNOWN = RUNNABLE | {"text", "json", "html", "ini", "nginx", "apache", "lighttpd", "vcl"}


def test_every_block_says_what_it_is():
    unlabelled = [block.where() for block in all_blocks() if block.lang not in KNOWN]
    assert not unlabelled, f"blocks without a known language: {unlabelled}"


def test_every_command_block_is_named_once():
    runnable = [block for block in all_blocks() if block.lang in RUNNABLE]
    unnamed = [block.where() for block in runnable if block.name is None]
    assert not unnamed, f"command blocks without <!-- doctest: NAME -->: {unnamed}"
    names = [block.name for block in runnable]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    named_others = [block.where() for block in all_blocks()
                    if block.name and block.lang not in RUNNABLE]
    assert not named_others, f"only command blocks are run: {named_others}"


def test_every_command_block_is_read_by_a_test():
    sources = "\n".join(path.read_text() for path in (REPO / "tests").rglob("test_*.py")
                        if path.name != "test_docs_index.py")
    names = {block.name for block in all_blocks() if block.lang in RUNNABLE}
    # a test names the block it runs (doc_block("name"), or a table of names it runs)
    quoted = set(re.findall(r"""["']([a-z0-9-]+)["']""", sources))
    used = quoted & names | set(re.findall(r"""doc_block\(\s*["']([a-z0-9-]+)["']""", sources))
    assert names - used == set(), f"named blocks no test runs: {sorted(names - used)}"
    assert used - names == set(), f"tests read blocks the docs no longer have: {used - names}"


def _design_block(comment: str) -> str:
    text = (REPO / "docs" / "design.md").read_text()
    after = text.split(f"<!-- {comment}", 1)[1]
    return after.split("```text\n", 1)[1].split("```", 1)[0]


def test_the_layer_picture_is_the_import_linter_contract():
    import tomllib

    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in contracts["contracts"] if c["type"] == "layers")["layers"]
    wanted = [[name.strip().removeprefix("huimages_wsgi.") for name in layer.split("|")]
              for layer in layers]
    drawn = [[name.strip() for name in line.split("   ")[0].split("|")]
             for line in _design_block("layers").splitlines()
             if line.strip() and line.strip() != "|"]
    drawn = [[name.split()[0] for name in row if name.split()] for row in drawn]
    assert drawn == wanted


def test_the_module_map_names_every_module():
    mapped: set[str] = set()
    package = ""
    for line in _design_block("modules").splitlines():
        if line[:1].strip():
            package = line.split("/")[0]
        mapped |= {f"{package}/{name}" for name in re.findall(r"\b([a-z0-9_]+\.py)\b", line)}
    modules = {f"{path.parent.name}/{path.name}"
               for path in (REPO / "huimages_wsgi").glob("*/*.py")
               if not path.name.startswith("__")}
    assert modules - mapped == set(), f"modules missing from docs/design.md: {modules - mapped}"
    gone = mapped - modules
    assert gone == set(), f"docs/design.md names modules that are gone: {gone}"
    top = sorted(path.name for path in (REPO / "huimages_wsgi").iterdir()
                 if path.name != "__pycache__")
    assert len(top) <= 10, top
