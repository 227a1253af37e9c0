"""Pillow's block cache for the processes that render: freed image memory kept for the
next image instead of going back to the system.

Usage (``huimages serve`` and ``huimages fcgi``, once their arguments are checked)::

    restart_with_pillow_blocks()   # returns when there is nothing to add, or this
                                   # process is not the huimages command (tests, an app)

Every render makes several images (the decoded source, the resize's intermediate, the
output); without the cache each one is fresh memory from the kernel, and its pages
fault in one by one: 19 % of a worker's CPU on the 24 MP original's fit ~1000 grid
(perf), 7 % on the panorama's. With up to 8 blocks of at most 4 MB kept (32 MB a
process at most), a worker did 6-17 % more cold renders a second on the ladder's 8 MP,
24 MP and panorama originals (bench/README.md, issue 23). Pillow reads
``PILLOW_BLOCKS_MAX`` and ``PILLOW_BLOCK_SIZE`` (its documented interface, "Block
Allocator") once, when it is first imported, and the command has imported it by the
time it runs, as has every worker it forks; so the command starts itself again with
them set. A value already in the environment wins, and the command then runs as it is.
gunicorn and other servers get them from their environment (docs/serving.md).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

#: The variables and their values: 8 blocks of at most 4 MB.
PILLOW_BLOCKS: Mapping[str, str] = {"PILLOW_BLOCKS_MAX": "8", "PILLOW_BLOCK_SIZE": "4m"}


def missing_pillow_blocks(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``PILLOW_BLOCKS`` that ``environ`` does not set."""
    return {name: value for name, value in PILLOW_BLOCKS.items() if name not in environ}


def started_as_command(argv0: str) -> bool:
    """Whether ``sys.argv[0]`` names the ``huimages`` command (its console script or
    ``python -m huimages_wsgi.cli``): only then is the whole process ours to restart."""
    path = Path(argv0)
    return path.name == "huimages" or path.parts[-2:] == ("cli", "__main__.py")


def restart_with_pillow_blocks() -> None:
    """Replace this process with the same command line and the block cache's variables
    added to its environment; return at once when none is missing, or when the process
    is not the ``huimages`` command (a test or an app calling ``main``)."""
    missing = missing_pillow_blocks(os.environ)
    if missing and started_as_command(sys.argv[0]):
        sys.stdout.flush()
        sys.stderr.flush()
        # the same interpreter and command line: nothing from outside is run
        os.execve(sys.executable, sys.orig_argv, {**os.environ, **missing})  # noqa: S606
