"""``GET /_health``: can this node serve and store images right now?

Usage (``make_app`` mounts it at ``/_health``)::

    HealthApp(store)

Three answers, for the three questions an orchestrator asks:

* ``/_health/live``: the process answers. From the process alone, never a
  backend: a liveness probe must not restart a node because CouchDB is down.
* ``/_health/ready``: a miss can be served now (backends reachable, cache
  writable, follower caught up). The report is kept for ``READY_SECONDS`` in
  each process, so probes from many load balancers cannot load the backends.
* ``/_health``: the full report, probed on every call (for the operator).

The checks themselves are the store's (``ImageStore.check``): each backend
(blob store, catalog; each bounded by ``HUIMAGES_BACKEND_TIMEOUT``) and that
the cache directory is writable. 200 with ``"status": "ok"`` when all pass,
else 503 with ``"status": "degraded"``, so a load balancer can route around
the node; cached variants are still served while degraded. The answer names
the backends (never credentials) and the errors: meant for the operator's
load balancer and monitoring; block it at the front or set
``HUIMAGES_HEALTH=0`` if it should not be public.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from webob import Request

from ..node.status import follower_check
from ..store.imagestore import ImageStore
from .responses import json_response, only_read_methods, text_error

#: Seconds a readiness report is reused by the process that made it.
READY_SECONDS = 1.0


class HealthApp:
    """The health report of one store as JSON: 200 when healthy, 503 when degraded."""

    def __init__(self, store: ImageStore, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self._ready: tuple[float, dict[str, Any]] | None = None
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        response = only_read_methods(request.method)
        if response is None:
            response = self.answer(request.path_info.rstrip("/"))
        return response(environ, start_response)

    def answer(self, which: str) -> Any:
        if which == "/live":
            return json_response(200, {"status": "ok", "pid": os.getpid()})
        if which == "/ready":
            report = self.ready_report()
        elif which == "":
            report = self.report()
        else:
            return text_error(404, "no such health check: use /_health, /_health/live"
                              " or /_health/ready")
        return json_response(200 if report["status"] == "ok" else 503, report, indent=2)

    def ready_report(self) -> dict[str, Any]:
        """The report, probed at most once per ``READY_SECONDS`` in this process. One
        probe at a time: while it runs (a silent backend takes its timeout), other
        probes get the last report at once instead of queueing behind it."""
        known = self._ready
        if known is not None and self.clock() - known[0] < READY_SECONDS:
            return known[1]
        if not self._lock.acquire(blocking=known is None):
            return known[1]  # type: ignore[index]
        try:
            known = self._ready  # another probe may have finished meanwhile
            if known is not None and self.clock() - known[0] < READY_SECONDS:
                return known[1]
            report = self.report()
            self._ready = (self.clock(), report)  # from when it was known
            return report
        finally:
            self._lock.release()

    def report(self) -> dict[str, Any]:
        checks = self.store.check()
        if self.store.config.follow:  # the node's change-feed follower (follower.py)
            checks["follower"] = follower_check(self.store.config)
        healthy = all(check["ok"] for check in checks.values())
        return {"status": "ok" if healthy else "degraded", "checks": checks}
