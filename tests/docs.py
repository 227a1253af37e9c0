"""The commands of README.md, docs/ and contrib/, by name, for the tests that run them.

Every fenced block in those pages says what it is. ``sh``, ``console`` and
``python`` blocks are things a reader runs: each is preceded by a marker
``<!-- doctest: NAME -->``, and some test reads it with ``doc_block(NAME)``
and runs that very text, with only the machine-specific parts substituted
(``substituted`` fails when a part it expects to replace is gone, so a docs
edit that changes the recipe changes what the test runs, or breaks it).
Anything else (URL grammar, example output, configuration excerpts) is
``text``, ``json``, ``html``, ``ini`` or a webserver's language.
tests/unit/test_docs_index.py holds the pages to this.

In a ``console`` block, lines starting with ``$ `` are commands and the
others show what they print.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RUNNABLE = frozenset({"sh", "console", "python"})
_FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*doctest:\s*([a-z0-9-]+)\s*-->\s*$")


def doc_pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
            *sorted((REPO / "contrib").glob("*/README.md"))]


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    name: str | None  # from the marker on the line before the fence

    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    lines = page.read_text().split("\n")
    found, i = [], 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening:
            j = i + 1
            while j < len(lines) and not re.match(r"^\s*```\s*$", lines[j]):
                j += 1
            marker = _MARKER.match(lines[i - 1]) if i else None
            indent = len(opening.group(1))
            text = "\n".join(line[indent:] for line in lines[i + 1 : j])
            found.append(Block(page, i + 1, opening.group(2), text,
                               marker.group(1) if marker else None))
            i = j
        i += 1
    return found


def all_blocks() -> list[Block]:
    return [block for page in doc_pages() for block in blocks(page)]


def doc_block(name: str) -> str:
    """The text of the block marked ``<!-- doctest: name -->``."""
    matches = [block for block in all_blocks() if block.name == name]
    assert len(matches) == 1, f"{len(matches)} blocks named {name!r}"
    return matches[0].text


def substituted(text: str, replacements: dict[str, str]) -> str:
    """``text`` with each key replaced; every key must occur in it."""
    for old, new in replacements.items():
        assert old in text, f"{old!r} is no longer in the documented block:\n{text}"
        text = text.replace(old, new)
    return text


def console_commands(text: str) -> list[str]:
    """The commands of a ``console`` block (its ``$ `` lines)."""
    return [line[2:] for line in text.splitlines() if line.startswith("$ ")]


def shell_env(**overrides: str) -> dict[str, str]:
    """The environment of a reader's shell: the project's venv first on PATH."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("HUIMAGES", "AWS_")) and key not in (
               "IMAGESERVERURL", "S3BUCKET", "COUCHSERVER")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(overrides)
    return env


def run_sh(text: str, cwd: Path, env: dict[str, str], timeout: float = 120.0
           ) -> subprocess.CompletedProcess[str]:
    """Run a finished shell block with bash; it must succeed."""
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", text], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{text}\n--- exit {result.returncode}\n{result.stderr}"
    return result


class ShellServer:
    """A shell block that starts servers (``a & b``), in its own process group."""

    def __init__(self, text: str, cwd: Path, env: dict[str, str],
                 log_dir: Path | None = None) -> None:
        """``log_dir`` (default ``cwd``) holds the block's output."""
        self.log = (log_dir or cwd) / f"doc-block-{os.getpid()}-{time.monotonic_ns()}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(["bash", "-c", text], cwd=cwd, env=env,
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
            except ProcessLookupError:
                pass
        try:  # children that outlived bash (a backgrounded server) leave with the group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def run_python(text: str, cwd: Path, env: dict[str, str], prelude: str = "",
               epilogue: str = "", timeout: float = 120.0) -> str:
    """Run a Python block (between optional lines of the test's own) in a fresh
    interpreter; its standard output."""
    code = "\n".join(part for part in (prelude, text, epilogue) if part)
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{code}\n--- exit {result.returncode}\n{result.stderr}"
    return result.stdout
