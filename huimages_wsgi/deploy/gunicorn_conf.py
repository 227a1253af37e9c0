"""The gunicorn settings of ``huimages serve``, also usable on gunicorn's command line.

``huimages serve`` applies :func:`settings`; running gunicorn directly gets
the same worker model with::

    gunicorn -c python:huimages_wsgi.deploy.gunicorn_conf 'huimages_wsgi:make_app()'

(``--workers``/``--threads``/``--bind`` on that command line still win).
The worker class (:mod:`huimages_wsgi.worker`) reads request heads in its
event loop and bounds every socket operation, so slow clients cost file
descriptors rather than threads; the many threads only ever wait (slow
readers, backends, render slots), while rendering itself is bounded per node
by :mod:`huimages_wsgi.admission`. docs/serving.md explains the choice and
the figures behind it.
"""

from __future__ import annotations

import os
from typing import Any

from ..cache.admission import cpu_count

#: threads per worker process: enough for slow readers (each holds one while it reads)
DEFAULT_THREADS = 64
WORKER_CLASS = "huimages_wsgi.deploy.worker.GuardedThreadWorker"


def default_workers() -> int:
    """One process per core (renders are CPU-bound and hold the GIL in parts);
    ``WEB_CONCURRENCY`` overrides it, as gunicorn's own default does."""
    try:
        return max(1, int(os.environ.get("WEB_CONCURRENCY", "")))
    except ValueError:
        return cpu_count()


def settings(workers: int | None = None, threads: int | None = None) -> dict[str, Any]:
    """gunicorn settings by name; None takes the default for this machine."""
    return {
        "worker_class": WORKER_CLASS,
        "workers": workers or default_workers(),
        "threads": threads or DEFAULT_THREADS,
        # connections per worker, including those still sending their head (no thread)
        "worker_connections": 1000,
        # the master restarts a worker whose event loop is silent this long; the
        # loop beats every second whatever its threads do, so renders never trip it
        "timeout": 60,
        "graceful_timeout": 10,
        "keepalive": 5,  # seconds an idle kept-alive connection stays open
        # request heads: image URLs are short; the API's headers too
        "limit_request_line": 4094,
        "limit_request_fields": 64,
        "limit_request_field_size": 8190,
        # several servers (nodes, tests) may share a machine: no shared ~/.gunicorn socket
        "control_socket_disable": True,
    }


# The same settings as module attributes, for
# ``gunicorn -c python:huimages_wsgi.deploy.gunicorn_conf``.
globals().update(settings())
