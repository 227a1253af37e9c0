"""The main process's part of ``prometheus_client``'s multiprocess mode.

    directory = prepare(config)      # before the first worker starts
    ...
    process_exited(worker_pid)       # from the server's child-exit hook

``huimages serve``, ``huimages fcgi`` and the gunicorn settings do both, as
``prometheus_client`` documents: the workers count in files of one directory
(``PROMETHEUS_MULTIPROC_DIR``; by default in ``/dev/shm``, see
``default_directory``), emptied of an earlier run's files at start, and a
worker that ends takes its live gauges out of the sums. ``prometheus_client``
reads the variable when it is first imported, so this module never imports it
before ``prepare`` has set it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
from collections.abc import MutableMapping
from pathlib import Path

from ..core.config import Config
from ..core.locks import try_lock

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
#: The files prometheus_client writes (``<type>_<pid>.db``): the only ones removed.
OWN_FILES = re.compile(r"(counter|histogram|summary|gauge_[a-z]+)_\d+\.db")
#: Memory, not the cache's disk: the files are memory-mapped and grow sparse, and a
#: write into a page a full disk cannot back kills the process (SIGBUS), not a request.
SHARED_MEMORY = Path("/dev/shm")

log = logging.getLogger("huimages_wsgi")
_held: list[int] = []  # the lock of the directory this server counts in, while it runs


def default_directory(config: Config) -> Path:
    """Where a node counts when the environment does not say: in shared memory, one
    private directory per data directory and user; ``<data dir>/metrics`` where
    there is none (or where another user made that directory first)."""
    if SHARED_MEMORY.is_dir() and os.access(SHARED_MEMORY, os.W_OK | os.X_OK):
        name = f"{os.getuid()}:{Path(config.data_dir).resolve()}"
        key = hashlib.sha256(name.encode()).hexdigest()[:16]
        directory = SHARED_MEMORY / f"huimages-metrics-{key}"
        try:
            directory.mkdir(mode=0o700, exist_ok=True)
            found = os.lstat(directory)
        except OSError:
            found = None
        if found is not None and stat.S_ISDIR(found.st_mode) and (
                found.st_uid == os.getuid() and not found.st_mode & 0o077):
            return directory  # this user's alone: nothing planted in it by another
    return Path(config.data_dir) / "metrics"


def prepare(config: Config, environ: MutableMapping[str, str] | None = None) -> Path | None:
    """The directory this server's processes count in, set in ``environ`` (kept as
    the operator set it) and emptied of an earlier run's files; None when
    metrics are off. A server holds the directory's lock while it runs: a second
    one started on it (or ``gunicorn --check-config``) empties nothing, and the
    two count together."""
    environ = os.environ if environ is None else environ
    if not config.metrics:
        return None
    directory = Path(environ.get(VARIABLE) or default_directory(config))
    directory.mkdir(parents=True, exist_ok=True)
    lock = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    if not try_lock(lock):
        os.close(lock)
        log.warning("another server counts in %s: /_metrics shows both together", directory)
    else:
        _held.append(lock)  # released when this process and its workers are gone
        for path in directory.iterdir():
            if OWN_FILES.fullmatch(path.name):
                path.unlink(missing_ok=True)
    environ[VARIABLE] = str(directory)
    return directory


def process_exited(pid: int) -> None:
    """For a worker that ended: its live gauges (render queue, renders running) leave
    the sums; its counters stay. Never raises: the server's supervision goes on."""
    if os.environ.get(VARIABLE):
        from prometheus_client import multiprocess  # the variable is set by now

        try:
            multiprocess.mark_process_dead(pid)
        except OSError as exc:  # a starting worker removed them first
            log.debug("gauges of process %d: %s", pid, exc)
