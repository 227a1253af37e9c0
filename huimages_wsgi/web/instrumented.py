"""Counting and logging every request of the standalone app, body untouched.

    app = Instrumented(app, metrics, log_requests=True)

``make_app`` wraps the whole application in :class:`Instrumented`: each
answer goes to the metrics (``metrics.py``: route, status class, duration,
bytes) and, switched by configuration, to the access log (``logs.py``).
Host applications that use ``ImageMiddleware`` alone get none of this and
pay nothing for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from ..core.config import Config
from ..core.urls import request_path
from ..store.imagestore import ImageStore
from .environ_keys import CACHE_KEY, ROUTE_KEY, SENDFILE_BYTES_KEY
from .logs import ACCESS_LOGGER

log = logging.getLogger("huimages_wsgi")
access_log = logging.getLogger(ACCESS_LOGGER)

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]

#: Service endpoints by their mount name; image requests are hit, miss or original.
ROUTES = {"_api": "api", "_browse": "browse", "_health": "health", "_metrics": "metrics"}


class RequestMeter(Protocol):
    multiprocess: bool  # counting with the node's other processes

    def request(self, route: str, status: int, seconds: float, nbytes: int) -> None: ...


def route_of(environ: dict[str, Any], first_segment: str, status: int) -> str:
    """The route label of an answered request: a service endpoint by name; an image
    request as ``original`` (``o/``, whether cached or not), ``miss`` (rendered, or
    not found, now) or ``hit``; ``other`` for the root page and answers to URLs
    that name no image."""
    service = environ.get(ROUTE_KEY)
    if service is not None:
        return ROUTES.get(service, "other")
    if first_segment == "o":  # o/<ID>: cached or copied now, an original either way
        return "original" if status < 400 or environ.get(CACHE_KEY) else "other"
    if environ.get(CACHE_KEY) == "miss":
        return "miss"
    if status in (200, 206, 304) and first_segment:
        return "hit"
    return "other"


class Instrumented:
    """Count and log every request of the wrapped application without touching its body.

    The response iterable is passed through unchanged, so ``wsgi.file_wrapper``
    (sendfile) keeps working; hence ``bytes`` is the Content-Length and
    ``duration_ms`` is the time to produce the response, not to transmit it.
    A request is a cache hit when the image server answered it (no service
    route) with 200, 206 or 304 and ImageMiddleware did not flag a miss.
    The wrapped app's ``.store`` and ``.config`` (when it has them) stay reachable.
    """

    def __init__(self, app: WSGIApp, metrics: RequestMeter | None, log_requests: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.log_requests = log_requests
        self.warned = False

    def warn_once(self) -> None:
        if not self.warned:
            self.warned = True
            log.warning(
                "this server runs several processes but PROMETHEUS_MULTIPROC_DIR is not set:"
                " /_metrics counts the answering process only (docs/operations.md)")

    @property
    def config(self) -> Config:
        return self.app.config  # type: ignore[attr-defined]

    @property
    def store(self) -> ImageStore:
        return self.app.store  # type: ignore[attr-defined]

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()
        path = _logged_path(environ) if self.log_requests else ""
        first = request_path(environ).lstrip("/").partition("/")[0]  # before routing moves it
        seen: list[tuple[str, list[tuple[str, str]]]] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen.append((status, headers))
            return start_response(status, headers, exc_info)

        try:
            body = self.app(environ, capture)
        except BaseException:
            self.finish(environ, "500 Internal Server Error", [], started, path, first)
            raise
        if seen:
            self.finish(environ, *seen[-1], started, path, first)
            return body
        return _Deferred(body, lambda: self.finish(environ, *_last(seen), started, path, first))

    def finish(
        self,
        environ: dict[str, Any],
        status_line: str,
        headers: list[tuple[str, str]],
        started: float,
        path: str,
        first: str,
    ) -> None:
        seconds = time.perf_counter() - started
        status = int(status_line[:3])
        nbytes = 0
        if environ.get("REQUEST_METHOD") != "HEAD" and status not in (204, 304):
            for name, value in reversed(headers):  # the responders put it last
                if name == "Content-Length" or name.lower() == "content-length":
                    nbytes = int(value) if value.isdigit() else 0
                    break
            else:
                nbytes = environ.get(SENDFILE_BYTES_KEY, 0) if status == 200 else 0
        cache = environ.get(CACHE_KEY)
        if cache is None and ROUTE_KEY not in environ and status in (200, 206, 304):
            cache = "hit"
        if self.metrics is not None:
            try:
                self.metrics.request(route_of(environ, first, status), status, seconds, nbytes)
            except Exception:  # noqa: BLE001 - counting must never fail the request counted
                log.exception("metrics: cannot count a request")
            if not self.metrics.multiprocess and environ.get("wsgi.multiprocess"):
                self.warn_once()
        if self.log_requests and access_log.isEnabledFor(logging.INFO):
            fields = {
                "method": environ.get("REQUEST_METHOD", ""),
                "path": path,
                "status": status,
                "bytes": nbytes,
                "duration_ms": round(seconds * 1000, 2),
                "cache": cache,
                "remote": environ.get("REMOTE_ADDR", ""),
            }
            access_log.info("request", extra={"fields": fields})


def _logged_path(environ: dict[str, Any]) -> str:
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    return path or environ.get("REQUEST_URI", "").split("?", 1)[0]


def _last(seen: list[tuple[str, list[tuple[str, str]]]]) -> tuple[str, list[tuple[str, str]]]:
    return seen[-1] if seen else ("500 Internal Server Error", [])


class _Deferred:
    """For apps that call start_response lazily: account when the server closes the body."""

    def __init__(self, body: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self.body, self.on_close = body, on_close

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self.on_close()
