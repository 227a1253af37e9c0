"""Running the standalone app under gunicorn from Python.

gunicorn's ``BaseApplication`` lets us hand each worker the already-built
configuration instead of re-reading the environment in the worker.
"""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from .config import Config
from .wsgi import make_app


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
    workers: int = 2,
    timeout: int = 60,
    access_log: bool = False,
) -> None:
    """Block serving the app; the catalog is opened once so errors show before forking."""
    make_app(config)  # fail fast on a bad configuration, in the parent
    options: dict[str, Any] = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "timeout": timeout,
        "graceful_timeout": 10,
        "worker_class": "sync",
        # several servers (nodes, tests) may share a machine: no shared ~/.gunicorn socket
        "control_socket_disable": True,
    }
    if access_log:
        options["accesslog"] = "-"
    _Gunicorn(config, options).run()
