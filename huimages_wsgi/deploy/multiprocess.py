"""The main process's part of ``prometheus_client``'s multiprocess mode.

    directory = prepare(config)      # before the first worker starts
    ...
    process_exited(worker_pid)       # from the server's child-exit hook

``huimages serve``, ``huimages fcgi`` and the gunicorn settings do both, as
``prometheus_client`` documents: the workers count in files of one directory
(``PROMETHEUS_MULTIPROC_DIR``; by default ``<data dir>/metrics``), emptied of
an earlier run's files at start, and a worker that ends takes its live gauges
out of the sums. ``prometheus_client`` reads the variable when it is first
imported, so this module never imports it before ``prepare`` has set it.
"""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping
from pathlib import Path

from ..core.config import Config

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
#: The files prometheus_client writes (``<type>_<pid>.db``): the only ones removed.
OWN_FILES = re.compile(r"(counter|histogram|summary|gauge_[a-z]+)_\d+\.db")


def prepare(config: Config, environ: MutableMapping[str, str] | None = None) -> Path | None:
    """The directory this server's processes count in, set in ``environ`` (kept as
    the operator set it) and emptied of an earlier run's files; None when
    metrics are off."""
    environ = os.environ if environ is None else environ
    if not config.metrics:
        return None
    directory = Path(environ.get(VARIABLE) or config.data_dir / "metrics")
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.iterdir():
        if OWN_FILES.fullmatch(path.name):
            path.unlink(missing_ok=True)
    environ[VARIABLE] = str(directory)
    return directory


def process_exited(pid: int) -> None:
    """For a worker that ended: its live gauges (render queue, renders running) leave
    the sums; its counters stay."""
    if os.environ.get(VARIABLE):
        from prometheus_client import multiprocess  # the variable is set by now

        multiprocess.mark_process_dead(pid)
