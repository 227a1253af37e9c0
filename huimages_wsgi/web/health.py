"""``GET /_health``: can this node serve and store images right now?

Usage (``make_app`` mounts it at ``/_health``)::

    HealthApp(store)

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

from collections.abc import Callable, Iterable
from typing import Any

from webob import Request

from ..node.status import follower_check
from ..store.imagestore import ImageStore
from .responses import json_response, only_read_methods


class HealthApp:
    """The health report of one store as JSON: 200 when healthy, 503 when degraded."""

    def __init__(self, store: ImageStore) -> None:
        self.store = store

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        response = only_read_methods(request.method)
        if response is None:
            report = self.report()
            status = 200 if report["status"] == "ok" else 503
            response = json_response(status, report, indent=2)
        return response(environ, start_response)

    def report(self) -> dict[str, Any]:
        checks = self.store.check()
        if self.store.config.follow:  # the node's change-feed follower (follower.py)
            checks["follower"] = follower_check(self.store.config)
        healthy = all(check["ok"] for check in checks.values())
        return {"status": "ok" if healthy else "degraded", "checks": checks}
