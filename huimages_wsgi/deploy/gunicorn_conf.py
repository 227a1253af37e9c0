"""gunicorn settings for running the app with gunicorn's own command line::

    gunicorn -c python:huimages_wsgi.deploy.gunicorn_conf 'huimages_wsgi:make_app()'

(``--workers``/``--threads``/``--bind`` on that command line still win). It
runs a node like ``huimages serve``: gunicorn's stock ``gthread`` worker with
as many threads per worker and a worker per core, the node's change-feed follower
started and stopped by the master (``when_ready``, ``on_exit``), the workers'
metrics counted together (``prometheus_client``'s multiprocess mode:
deploy/multiprocess.py, ``child_exit``), and each
worker's share of whole-original decodes and its render queue (``post_fork``), all through
gunicorn's documented settings and server hooks. What it lacks is granian's
handling of slow clients: gthread reads a request head and body in a worker
thread, so a connection that sends slowly holds a thread until gunicorn's
timeouts end it. Behind nginx, which buffers requests, that never happens;
facing clients directly, ``huimages serve`` is the one to run.
docs/serving.md has the figures.
"""

from __future__ import annotations

import os
from typing import Any

from ..core.config import Config
from ..imaging.decode import silence_bomb_warnings
from ..node.process import start_follower_process, stop_follower_process
from .multiprocess import prepare, process_exited
from .sizing import DEFAULT_THREADS, decode_share, default_workers, render_queue

WORKER_CLASS = "gthread"


def settings(workers: int | None = None, threads: int | None = None) -> dict[str, Any]:
    """gunicorn settings by name; None takes the default for this machine."""
    return {
        "worker_class": WORKER_CLASS,
        "workers": workers or default_workers(),
        "threads": threads or DEFAULT_THREADS,
        # connections per worker, kept-alive ones waiting in its event loop included
        "worker_connections": 1000,
        "timeout": 60,  # the master restarts a worker silent this long
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

# -- gunicorn's server hooks -----------------------------------------------------------

_followers: list[Any] = []


def node_config() -> Config:
    """The configuration of ``gunicorn -c``: the environment, with the follower on
    unless HUIMAGES_FOLLOW says otherwise (as in ``huimages serve``)."""
    config = Config.from_env()
    return config.with_changes(follow=True) if config.follow is None else config


# The workers' metrics directory, emptied: when gunicorn reads this file, before it
# loads the app (with --preload too) and before any worker (multiprocess.py).
prepare(node_config())


def child_exit(server: Any, worker: Any) -> None:
    """In the master, for each worker that ended: its live gauges leave /_metrics."""
    process_exited(worker.pid)


def when_ready(server: Any) -> None:
    """In the master, once it listens: the node's one change-feed follower."""
    _followers.append(start_follower_process(node_config()))


def on_exit(server: Any) -> None:
    """In the master, on the way out: stop the follower it started."""
    for process in _followers:
        stop_follower_process(process)


def post_fork(server: Any, worker: Any) -> None:
    """In each new worker, before it loads the app: the node's settings as
    ``huimages serve`` gives them, where the environment leaves them open (the
    follower on, so /_health and /_metrics report it; its share of decodes)."""
    silence_bomb_warnings()
    config = node_config()
    os.environ.setdefault("HUIMAGES_FOLLOW", "1" if config.follow else "0")
    if config.render_slots_per_process is None:
        os.environ["HUIMAGES_RENDER_SLOTS_PER_PROCESS"] = str(decode_share(server.cfg.workers))
    if config.render_queue is None:
        os.environ["HUIMAGES_RENDER_QUEUE"] = str(render_queue(server.cfg.threads))
