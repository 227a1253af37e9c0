"""The gunicorn settings of ``huimages serve``, also usable on gunicorn's command line.

``huimages serve`` applies :func:`settings`; running gunicorn directly gets
the same worker model with::

    gunicorn -c python:huimages_wsgi.deploy.gunicorn_conf 'huimages_wsgi:make_app()'

(``--workers``/``--threads``/``--bind`` on that command line still win), and
the same node: gunicorn's ``when_ready`` and ``on_exit`` hooks below start and
stop the node's change-feed follower in the master, and ``post_fork`` gives
each worker its share of the node's render slots, as ``huimages serve`` does.
The worker class (:mod:`huimages_wsgi.deploy.worker`) reads request heads in its
event loop and bounds every socket operation, so slow clients cost file
descriptors rather than threads; the many threads only ever wait (slow
readers, backends, render slots), while rendering itself is bounded per node
by :mod:`huimages_wsgi.cache.admission`. docs/serving.md explains the choice and
the figures behind it.
"""

from __future__ import annotations

import os
from typing import Any

from ..cache.admission import cpu_count
from ..core.config import Config
from ..node.process import start_follower_process, stop_follower_process

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


def render_share(config: Config, workers: int) -> int:
    """Each worker's share of the node's render slots: the slots (a core each by
    default) divided among the workers, rounded up."""
    slots = cpu_count() if config.render_slots is None else config.render_slots
    return max(1, -(-slots // workers))


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

# -- gunicorn's server hooks, for that command line (``huimages serve`` sets its own) --

_followers: list[Any] = []


def node_config() -> Config:
    """The configuration of ``gunicorn -c``: the environment, with the follower on
    unless HUIMAGES_FOLLOW says otherwise (as in ``huimages serve``)."""
    config = Config.from_env()
    return config.with_changes(follow=True) if config.follow is None else config


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
    follower on, so /_health and /_metrics report it; its share of the slots)."""
    config = node_config()
    os.environ.setdefault("HUIMAGES_FOLLOW", "1" if config.follow else "0")
    if config.render_slots_per_process is None:
        os.environ["HUIMAGES_RENDER_SLOTS_PER_PROCESS"] = str(
            render_share(config, server.cfg.workers))
