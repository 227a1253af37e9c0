"""Pillow's block cache for the processes that render: freed image memory kept for the
next image instead of going back to the system.

Usage (``huimages serve`` and ``huimages fcgi``, once their arguments are checked, when
``main`` parsed the process's own command line)::

    restart_with_pillow_blocks()   # returns when the environment sets the cache already

Every render makes several images (the decoded source, the resize's intermediate, the
output), each a large buffer that goes back to the system when freed (imaging/memory.py);
without the cache each new one faults its pages in one by one: 19 % of a worker's CPU
on the 24 MP original's fit ~1000 grid (perf), 7 % on the panorama's. With up to 8
blocks of at most 4 MB kept (32 MB a process at most), a worker did 8-27 % more cold
renders a second on the ladder's 8, 24 and 48 MP and panorama landscapes
(bench/block_cache_ab.py, bench/README.md, issue 23). Pillow reads
``PILLOW_BLOCKS_MAX`` and ``PILLOW_BLOCK_SIZE`` (its documented interface, "Block
Allocator") once, when it is first imported, and the command has
imported it by the time it runs, as has every worker it forks; so the command starts
itself again, as the same process, with them set. Either variable set already is the
operator's choice, and the command then runs as it is. gunicorn and other servers get
them from their environment (docs/serving.md).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

log = logging.getLogger("huimages_wsgi")

#: The variables and their values: 8 blocks of at most 4 MB.
PILLOW_BLOCKS: Mapping[str, str] = {"PILLOW_BLOCKS_MAX": "8", "PILLOW_BLOCK_SIZE": "4m"}


def pillow_blocks_to_add(environ: Mapping[str, str]) -> dict[str, str]:
    """``PILLOW_BLOCKS``, or nothing when ``environ`` sets either variable (one setting:
    a block size without the cache, or a cache without its block size, is chosen)."""
    return {} if any(name in environ for name in PILLOW_BLOCKS) else dict(PILLOW_BLOCKS)


def restart_with_pillow_blocks() -> None:
    """Replace this process with the same command line and the block cache's variables
    added to its environment; return at once when there are none to add. If the
    interpreter cannot be started again, say so and go on without the cache."""
    added = pillow_blocks_to_add(os.environ)
    if not added:
        return
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:  # None when the descriptor was closed
            stream.flush()
    try:
        # the same interpreter and command line: nothing from outside is run
        os.execve(sys.executable, sys.orig_argv, {**os.environ, **added})  # noqa: S606
    except OSError as exc:
        log.warning("not restarting with Pillow's block cache (%s): %s", exc,
                    ", ".join(f"{name}={value}" for name, value in added.items()))
