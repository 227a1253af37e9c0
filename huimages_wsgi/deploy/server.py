"""Running the standalone app under gunicorn from Python.

gunicorn's ``BaseApplication`` lets us hand each worker the already-built
configuration instead of re-reading the environment in the worker. The
master (arbiter) starts the node's one change-feed follower (follower.py) as
a child process once it is ready, and stops it on exit: one per node, not
one per worker.
"""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from ..core.config import Config
from ..node.process import start_follower_process, stop_follower_process
from ..web.app import make_app
from ..web.logs import make_formatter
from .gunicorn_conf import render_share
from .gunicorn_conf import settings as gunicorn_settings


class StructuredGunicornLogger(Logger):
    """gunicorn's own lines (start, worker exits, timeouts) in HUIMAGES_LOG_FORMAT too.

    gunicorn's access log stays off: the app writes its own structured one
    (``HUIMAGES_ACCESS_LOG``/``--access-log``), which also knows cache hits.
    """

    log_format = "text"

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(make_formatter(self.log_format))


class JsonGunicornLogger(StructuredGunicornLogger):
    log_format = "json"


GUNICORN_LOGGERS = {"text": StructuredGunicornLogger, "json": JsonGunicornLogger}


class _Gunicorn(BaseApplication):
    def __init__(self, config: Config, options: dict[str, Any]) -> None:
        self.huimages_config = config
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):  # noqa: ANN201 - gunicorn's signature
        return make_app(self.huimages_config)


def run_gunicorn(
    config: Config,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int | None = None,
    timeout: int | None = None,
    threads: int | None = None,
) -> None:
    """Block serving the app; the catalog is opened once so errors show before forking.

    The worker model and its limits are gunicorn_conf.settings(); None takes
    the defaults for this machine (a worker per core, 64 threads each).
    """
    make_app(config)  # fail fast on a bad configuration, in the parent
    options: dict[str, Any] = {
        **gunicorn_settings(workers=workers, threads=threads),
        "bind": f"{host}:{port}",
        "logger_class": GUNICORN_LOGGERS[config.log_format],
    }
    if config.render_slots_per_process is None:  # each worker its share of the node's slots
        config = config.with_changes(
            render_slots_per_process=render_share(config, options["workers"]))
    if timeout:
        options["timeout"] = timeout
    followers: list[Any] = []
    options["when_ready"] = lambda server: followers.append(start_follower_process(config))
    options["on_exit"] = lambda server: [stop_follower_process(f) for f in followers]
    _Gunicorn(config, options).run()
