"""The small answers every endpoint shares: errors, JSON, the 405, and the error wrapper.

Image URLs answer errors in plain text (a browser or ``curl`` shows them as
they are), the API and the operations endpoints in JSON, the browse pages in
HTML; all of them say ``no-store`` so an error is never cached as if it were
an image, and a 503 always tells the client when to come back.

``guarded`` is the one error wrapper every front uses: an expected failure
(``HuImagesError``) becomes its own status, anything else a logged 500 that
shows the client no stack trace.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from webob import Response

from ..core.errors import HuImagesError

log = logging.getLogger("huimages_wsgi")
T = TypeVar("T")

RETRY_AFTER = "5"  # seconds; a backend outage or a busy variant is usually short
READ_METHODS = ("GET", "HEAD")


def text_error(status: int, message: str, allow: Iterable[str] = READ_METHODS) -> Response:
    response = Response(status=status, content_type="text/plain", charset="utf-8")
    response.text = message.rstrip("\n") + "\n"
    if status == 503:
        response.headers["Retry-After"] = RETRY_AFTER
    if status == 405:
        response.allow = tuple(allow)
    response.cache_control = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"  # an echoed input stays text
    return response


def redirect(location: str, message: str) -> Response:
    """A 301: the variant lives at ``location`` for good (a CDN may keep the answer)."""
    response = text_error(301, f"{message}: {location}")
    response.location = location
    response.cache_control = "public, max-age=86400"
    return response


def json_response(
    status: int, payload: Any, headers: Mapping[str, str] | None = None, indent: int | None = None
) -> Response:
    response = Response(status=status, content_type="application/json", charset=None)
    body = json.dumps(payload, default=str, sort_keys=True, indent=indent)
    response.body = body.encode() + b"\n"
    response.cache_control = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    if status == 503:
        response.headers["Retry-After"] = RETRY_AFTER
    response.headers.update(headers or {})
    return response


def only_read_methods(method: str) -> Response | None:
    """The 405 for anything but GET and HEAD, or None when the method is fine."""
    if method in READ_METHODS:
        return None
    return text_error(405, f"method {method} not allowed: use GET or HEAD")


class InternalError(HuImagesError):
    """What a client is told of an unexpected failure (the log has the rest)."""

    status = 500


def guarded(
    call: Callable[[], T], on_error: Callable[[HuImagesError], T], what: Callable[[], str]
) -> T:
    """``call()``, with every failure answered by ``on_error``; 5xx logged (unless the
    error says it is counted instead, as a busy node's refusals are), 4xx not.

    ``what()`` names the request in the log (method and path, never a body);
    it is called only when there is something to log.
    """
    try:
        return call()
    except HuImagesError as exc:
        if exc.status >= 500 and exc.logged:
            log.warning("%s %s: %s", exc.status, what(), exc)
        return on_error(exc)
    except Exception:
        log.exception("unexpected error in %s", what())
        return on_error(InternalError("internal error"))
