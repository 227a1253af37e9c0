"""``huimages serve``: the standalone app under granian, with the node's follower.

granian (a Rust HTTP server with a WSGI interface, used through its public
``Granian`` class) reads request heads and bodies and writes answers on its
own event loop, so slow clients, half-sent heads and trickling bodies cost it
a connection, never a Python thread; the app runs on each worker's pool of
blocking threads (``--threads``). A request head must arrive within
``HEADER_TIMEOUT`` seconds. TLS is granian's (``--certfile`` and a PKCS#8
``--keyfile``). The main process starts the node's one change-feed follower
when it is ready and stops it on the way out, and starts a worker again if
one dies. The workers count their metrics together (multiprocess.py); granian
has no hook for a worker that ends, so the next worker to start takes a dead
one's gauges out of the sums (``web/metrics.py``). docs/serving.md has the
measurements behind the choice.

The configuration built by the ``huimages`` command reaches the workers as
their environment (``Config.environ``), the way every child process of the
node gets it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from granian import Granian
from granian.constants import Interfaces
from granian.http import HTTP1Settings

from ..core.config import Config
from ..imaging.decode import silence_bomb_warnings
from ..node.process import start_follower_process, stop_follower_process
from ..web.app import make_app
from .multiprocess import prepare
from .sizing import DEFAULT_THREADS, decode_share, default_workers, render_queue

#: Seconds a client may take to send a request head; then the connection is closed.
HEADER_TIMEOUT = 10.0
#: Seconds a stopping worker gets to finish its requests.
STOP_TIMEOUT = 10


def log_config(log_format: str) -> dict[str, Any]:
    """granian's own lines (start, workers, errors) in HUIMAGES_LOG_FORMAT too."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"huimages": {"()": "huimages_wsgi.web.logs.make_formatter",
                                    "log_format": log_format}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "huimages"}},
        "loggers": {"_granian": {"handlers": ["stderr"], "level": "INFO", "propagate": False}},
    }


def run_server(
    config: Config,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int | None = None,
    threads: int | None = None,
    certfile: Path | None = None,
    keyfile: Path | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT; a bad configuration fails here, before listening."""
    prepare(config)  # the workers' metrics directory, before anything loads prometheus_client
    make_app(config)
    workers, threads = workers or default_workers(), threads or DEFAULT_THREADS
    if config.render_slots_per_process is None:
        config = config.with_changes(render_slots_per_process=decode_share(workers))
    if config.render_queue is None:
        config = config.with_changes(render_queue=render_queue(threads))
    config.export(os.environ)  # the workers' configuration
    server = Granian(
        "huimages_wsgi.deploy.server:worker_app",
        factory=True,
        interface=Interfaces.WSGI,
        address=host,
        port=port,
        workers=workers,
        blocking_threads=threads,
        backlog=2048,
        http1_settings=HTTP1Settings(header_read_timeout=int(HEADER_TIMEOUT * 1000)),
        ssl_cert=certfile,
        ssl_key=keyfile,
        respawn_failed_workers=True,
        workers_kill_timeout=STOP_TIMEOUT,
        log_dictconfig=log_config(config.log_format),
    )
    followers: list[Any] = []
    server.on_startup(lambda: followers.append(start_follower_process(config)))
    server.on_shutdown(lambda: [stop_follower_process(process) for process in followers])
    server.serve()


def worker_app() -> Any:
    """The app of one granian worker, from the configuration ``run_server`` handed down."""
    silence_bomb_warnings()
    return make_app(Config.from_env())
