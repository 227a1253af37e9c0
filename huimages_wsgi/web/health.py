"""``GET /_health``: can this node serve and store images right now?

Usage (``make_app`` mounts it at ``/_health``)::

    HealthApp(store)

Three answers, for the three questions an orchestrator asks:

* ``/_health/live``: the process answers. From the process alone, never a
  backend: a liveness probe must not restart a node because CouchDB is down.
* ``/_health/ready``: a miss can be served now (backends reachable, cache
  writable, follower caught up).
* ``/_health``: the same report (for the operator).

Both share one probe, kept for ``READY_SECONDS`` in each process, so a flood
of calls from load balancers (or anyone) cannot load the backends.

The checks themselves are the store's (``ImageStore.check``): each backend
(blob store, catalog; each bounded by ``HUIMAGES_BACKEND_TIMEOUT``) and that
the cache directory is writable. 200 with ``"status": "ok"`` when all pass,
else 503 with ``"status": "degraded"``, so a load balancer can route around
the node; cached variants are still served while degraded. Local clients and
holders of the upload token (``auth.trusted``) see what each check probed
(backends and paths, never credentials) and its error; everyone else sees
the status and whether each check passed, nothing about the machine.
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
from .auth import trusted
from .responses import json_response, only_read_methods, text_error

#: Seconds a probe's report (/_health and /_health/ready) is reused by its process.
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
            detail = trusted(self.store.config, environ)
            response = self.answer(request.path_info.rstrip("/"), detail)
        return response(environ, start_response)

    def answer(self, which: str, detail: bool = True) -> Any:
        if which == "/live":
            return json_response(200, {"status": "ok", "pid": os.getpid()})
        if which not in ("", "/ready"):
            return text_error(404, "no such health check: use /_health, /_health/live"
                              " or /_health/ready")
        report = self.ready_report()
        if not detail:
            report = public_report(report)
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


def public_report(report: dict[str, Any]) -> dict[str, Any]:
    """The report without what each check probed (paths, backends) and its errors."""
    checks = {name: {"ok": check["ok"]} for name, check in report["checks"].items()}
    return {"status": report["status"], "checks": checks}
