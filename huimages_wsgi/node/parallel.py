"""Bulk jobs on every core (``--jobs N``) and every node (``--shard K/N``).

``huimages put``, ``previews``, ``migrate`` and ``check`` hand their items to
:func:`run_jobs`: with one job they run in this process; with more, in a
pool of worker processes (``concurrent.futures.ProcessPoolExecutor``), each
holding its own ImageStore built from the same configuration. At most a few
items per worker are in flight, so a million IDs never sit in the queue, and
results come back in input order (``put`` prints IDs in the order of its
files).

Ctrl-C (SIGINT) stops the run cleanly: workers ignore it, the parent stops
handing out items, lets those in flight finish (each step is idempotent and
short), and the KeyboardInterrupt reaches the command, which prints what
was done so far. Every step is idempotent, so a rerun resumes.

``--shard K/N`` keeps the IDs whose :func:`shard_of` is K: N nodes each run
one shard of the same backfill over the shared catalog, with no other
coordination. The hash is the ID's leading base32 digits (the ID itself is
a SHA-1), so it is stable across machines, Python versions and runs.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from ..core.config import Config
from ..core.errors import HuImagesError
from ..core.ids import is_valid_id

log = logging.getLogger("huimages_wsgi")

#: The outcome of a step that failed with one of our errors: counted, and the run goes on.
FAILED = "failed"
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
#: Items in flight per worker: enough to keep each busy, few enough to stop quickly.
IN_FLIGHT_PER_JOB = 2

Step = Callable[[Any, Any], Any]  # (store, item) -> result, run in a worker

_worker_store: Any = None


def shard_of(imageid: str, count: int) -> int:
    """The shard (0 .. count-1) an image belongs to; the same everywhere, always."""
    if is_valid_id(imageid):
        value = 0
        for char in imageid[:12]:  # 60 bits of the SHA-1
            value = value * 32 + _B32.index(char)
    else:  # legacy or hand-made IDs: still stable
        digest = hashlib.sha1(imageid.encode(), usedforsecurity=False).digest()
        value = int.from_bytes(digest[:8], "big")
    return value % count


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` with 0 <= K < N, for argparse."""
    index, sep, count = text.partition("/")
    try:
        k, n = int(index), int(count)
    except ValueError:
        k, n = -1, 0
    if not sep or n < 1 or not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"want K/N with 0 <= K < N, got {text!r}")
    return k, n


def in_shard(imageids: Iterable[str], shard: tuple[int, int] | None) -> list[str]:
    if shard is None:
        return list(imageids)
    k, n = shard
    return [imageid for imageid in imageids if shard_of(imageid, n) == k]


def default_jobs() -> int:
    return os.cpu_count() or 1


def _init_worker(config: Config, make_store: Callable[[Config], Any]) -> None:
    global _worker_store
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    _worker_store = make_store(config)


def _run_step(step: Step, item: Any) -> Any:
    return step(_worker_store, item)


def run_jobs(
    config: Config,
    make_store: Callable[[Config], Any],
    step: Step,
    items: Iterable[Any],
    jobs: int,
) -> Iterator[tuple[Any, Any]]:
    """Yield ``(item, step(store, item))`` in input order, using ``jobs`` processes.

    ``step`` and ``make_store`` must be module-level functions (they are
    pickled to the workers). An exception from a step ends the run, as in a
    loop; steps report expected failures as results.
    """
    if jobs <= 1:
        store = make_store(config)
        for item in items:
            yield item, step(store, item)
        return
    pending: deque[tuple[Any, Future]] = deque()
    source = iter(items)
    executor = ProcessPoolExecutor(jobs, initializer=_init_worker,
                                   initargs=(config, make_store))
    try:
        for item in source:
            pending.append((item, executor.submit(_run_step, step, item)))
            if len(pending) >= jobs * IN_FLIGHT_PER_JOB:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
    except KeyboardInterrupt:
        # let the steps in flight finish: each is idempotent, none is left half done
        for _, future in pending:
            future.cancel()
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


# -- the steps of the bulk commands (module level: they are sent to the workers) --------


def put_step(store: Any, item: tuple[str, dict[str, Any]]) -> tuple[bool, str]:
    """Upload one file: ``(True, ID)`` or ``(False, the error)``."""
    from pathlib import Path

    name, options = item
    path = Path(name)
    try:
        return True, store.save_image(path.read_bytes(), filename=path.name, **options)
    except (OSError, HuImagesError) as exc:
        return False, str(exc)


def _outcome(what: str, imageid: str, step: Callable[[], str]) -> str:
    """``step()``'s outcome, or ``FAILED`` (logged) when it fails with one of our errors."""
    try:
        return step()
    except HuImagesError as exc:
        log.warning("%s %s failed: %s", what, imageid, exc)
        return FAILED


def previews_step(store: Any, imageid: str) -> str:
    from ..store.backfill import ensure_previews

    return _outcome("making previews of", imageid, lambda: ensure_previews(store, imageid))


def check_step(store: Any, imageid: str) -> str:
    from ..store.broken import check_image

    return _outcome("checking", imageid, lambda: check_image(store, imageid))


def migrate_step(store: Any, imageid: str) -> str:
    return _outcome("migrating", imageid, lambda: store.migrate_one(imageid))
