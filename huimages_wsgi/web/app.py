"""The standalone application: the image server with its service endpoints beside it.

Usage::

    gunicorn 'huimages_wsgi:make_app()'

``make_app`` wires, from one ``Config``: ``ImageMiddleware`` at the root,
the endpoints under reserved ``/_`` names (``Mount``), and around all of it
the metrics and access log (``instrumented.Instrumented``). To add images to an
application of your own, use ``ImageMiddleware`` alone (middleware.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..core.config import Config
from ..core.urls import request_path
from ..imaging.memory import return_large_buffers
from ..store.imagestore import ImageStore
from .api import ApiApp
from .browse import BrowseApp
from .environ_keys import ROUTE_KEY
from .health import HealthApp
from .instrumented import Instrumented
from .logs import ensure_logging
from .middleware import ImageMiddleware, WSGIApp, not_found_app
from .rootpage import RootPage


class Mount:
    """Service endpoints at reserved top-level names in front of the image server.

    Names start with ``_`` (``/_api``, ``/_health``, ...) and size names
    never do (``sizes.PRESET_NAME_RE``), so no endpoint can shadow an image
    URL, and an image request pays one character comparison. A routed
    request sees its name moved from PATH_INFO to SCRIPT_NAME, as under any
    WSGI mount. ``.store``/``.config`` are the image app's.
    """

    def __init__(
        self, images: ImageMiddleware, routes: dict[str, WSGIApp | None],
        root: WSGIApp | None = None,
    ) -> None:
        self.images = images
        self.routes = {name: app for name, app in routes.items() if app is not None}
        self.root = root  # the answer at "/" (rootpage.RootPage), if any

    @property
    def config(self) -> Config:
        return self.images.config

    @property
    def store(self) -> ImageStore:
        return self.images.store

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        path = request_path(environ)
        if self.root is not None and path in ("", "/"):
            return self.root(environ, start_response)
        if path[1:2] == "_":
            name, slash, rest = path[1:].partition("/")
            app = self.routes.get(name)
            if app is not None:
                script = environ.get("SCRIPT_NAME", "")
                if not environ.get("PATH_INFO") and path.startswith(script):
                    script = ""  # a FastCGI front put the whole path into SCRIPT_NAME
                environ[ROUTE_KEY] = name
                environ["SCRIPT_NAME"] = f"{script.rstrip('/')}/{name}"
                environ["PATH_INFO"] = slash + rest
                return app(environ, start_response)
        return self.images(environ, start_response)


def make_app(config: Config | None = None, store: ImageStore | None = None) -> WSGIApp:
    """The standalone application (also the gunicorn factory: ``huimages_wsgi:make_app()``).

    The image server at the root, the service endpoints beside it (each one
    line, switched by configuration), and around all of it the metrics and
    access log. ``store``, when given, is served instead of a store built
    from ``config`` (one with its own engine or backends, as ImageMiddleware
    takes one).
    """
    store = store or ImageStore(config)
    config = store.config
    ensure_logging(config.log_format, config.access_log)
    return_large_buffers()  # threaded workers keep no photo per arena (memory.py)
    metrics = None
    if config.metrics:  # prometheus_client is loaded here, after the server prepared it
        from .metrics import Metrics, MetricsApp

        metrics = Metrics(config)
    routes: dict[str, WSGIApp | None] = {
        "_api": ApiApp(store),  # answers 404 "disabled" until HUIMAGES_UPLOAD_TOKEN is set
        "_health": HealthApp(store) if config.health else None,
        "_metrics": MetricsApp(metrics) if metrics else None,
        "_browse": BrowseApp(store) if config.browse else None,
    }
    images = ImageMiddleware(not_found_app, prefix="", store=store)
    if images.admission is not None:  # queue, waits, 503s on /_metrics
        images.admission.observer = metrics.admission if metrics else None
    root = RootPage(config, browse=routes["_browse"] is not None)
    app: WSGIApp = Mount(images, routes, root)
    if metrics or config.access_log:
        app = Instrumented(app, metrics, log_requests=config.access_log)
    return app
