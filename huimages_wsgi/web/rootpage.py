"""The answer at ``/`` of the standalone application (``make_app``).

With the browse page on, ``/`` sends a visitor there (302 to ``/_browse/``);
with it off, ``/`` says in a few lines of plain text what this server is,
its version and where the images live, instead of the image router's
"not an image URL" 404.  Nothing about the machine (paths, backends) is told.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..core.config import Config
from .responses import READ_METHODS

__all__ = ["RootPage"]


class RootPage:
    """A tiny WSGI app for the path ``/`` (and the empty path below a mount)."""

    def __init__(self, config: Config, browse: bool) -> None:
        from .. import __version__  # here: the package imports this module while it loads

        self.browse = browse
        base = config.server_url.rstrip("/")
        self.text = (
            f"huimages-wsgi {__version__}: an image store that serves every image at any size.\n"
            f"Images live at {base}/<size>/<ID>.<ext> (size 'o' is the original;"
            " ext jpeg, webp, avif or png).\n"
            "The browse page is off (HUIMAGES_BROWSE=1 turns it on at /_browse/).\n"
        ).encode()

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in READ_METHODS:
            body = f"method {method} not allowed: use GET or HEAD\n".encode()
            return self._answer(environ, start_response, "405 Method Not Allowed", body,
                                [("Allow", ", ".join(READ_METHODS))])
        if self.browse:
            location = environ.get("SCRIPT_NAME", "").rstrip("/") + "/_browse/"
            body = f"see {location}\n".encode()
            return self._answer(environ, start_response, "302 Found", body,
                                [("Location", location)])
        return self._answer(environ, start_response, "200 OK", self.text, [])

    @staticmethod
    def _answer(environ: dict[str, Any], start_response: Callable, status: str, body: bytes,
                extra: list[tuple[str, str]]) -> Iterable[bytes]:
        start_response(status, [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            *extra,
        ])
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]
