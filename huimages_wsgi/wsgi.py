"""The WSGI layer: URL parsing, HTTP semantics and the cache fast path.

``ImageMiddleware`` answers ``<prefix>/<size>/<ID>.<ext>`` and
``<prefix>/<size>/<ID>/<seo-name>.<ext>`` and hands every other request to
the wrapped application untouched. A cache hit costs one ``stat`` and no
catalog query; only a miss reaches the catalog, the blob store and Pillow.
Every expected failure becomes a short plain-text answer with a precise
status; nothing unexpected leaks a stack trace to the client.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from stat import S_ISREG
from typing import Any
from urllib.parse import parse_qs, unquote_to_bytes

from webob import Request, Response

from .config import XSENDFILE_HEADERS, Config
from .errors import (
    BackendUnavailable,
    GenerationBusy,
    HuImagesError,
    ImageNotFound,
    InvalidPath,
    SignatureError,
)
from .ids import validate_id
from .signing import verify
from .sizes import Size
from .store import ImageStore

log = logging.getLogger("huimages_wsgi")

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]
CONTENT_TYPES = {"jpeg": "image/jpeg"}
CACHE_CONTROL = "public, max-age=31536000, immutable"
_SEO_NAME_RE = re.compile(r"[^\x00-\x20\x7f/\\]{1,200}")
_RETRY_AFTER = "5"


def request_path(environ: dict[str, Any]) -> str:
    """The request path below SCRIPT_NAME, robust to FastCGI fronts.

    Some fronts (Apache's mod_proxy_fcgi, lighttpd's 404 handler) leave
    PATH_INFO empty and put the whole path into SCRIPT_NAME; REQUEST_URI
    always carries what the client asked for.
    """
    path = environ.get("PATH_INFO", "")
    if path:
        return path
    uri = environ.get("REQUEST_URI", "")
    if not uri:
        return environ.get("SCRIPT_NAME", "")
    raw = unquote_to_bytes(uri.split("?", 1)[0]).decode("latin-1")
    script = environ.get("SCRIPT_NAME", "")
    if script and raw != script and raw.startswith(script.rstrip("/") + "/"):
        return raw[len(script.rstrip("/")) :]
    return raw


def query_param(environ: dict[str, Any], name: str) -> str | None:
    """One query parameter, tolerant of bytes that are not UTF-8 (WebOb raises on them)."""
    values = parse_qs(environ.get("QUERY_STRING", ""), errors="replace").get(name)
    return values[0] if values else None


def _not_found_app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    body = b"Not found\n"
    start_response(
        "404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    )
    return [body]


def error_response(status: int, message: str) -> Response:
    response = Response(status=status, content_type="text/plain", charset="utf-8")
    response.text = message.rstrip("\n") + "\n"
    if status in (503,):
        response.headers["Retry-After"] = _RETRY_AFTER
    if status == 405:
        response.allow = ("GET", "HEAD")
    response.cache_control = "no-store"
    return response


class ImageRequest:
    """A parsed image URL: which variant of which image, in which format."""

    __slots__ = ("imageid", "size_text", "ext")

    def __init__(self, imageid: str, size_text: str, ext: str) -> None:
        self.imageid, self.size_text, self.ext = imageid, size_text, ext

    @classmethod
    def parse(cls, path: str) -> ImageRequest:
        parts = path.split("/")
        if len(parts) not in (3, 4) or parts[0] != "":
            raise InvalidPath("not an image URL: use /<size>/<ID>.jpeg")
        stem, dot, ext = parts[-1].rpartition(".")
        if not dot or ext not in CONTENT_TYPES:
            raise InvalidPath(f"unsupported extension: use one of {sorted(CONTENT_TYPES)}")
        if len(parts) == 3:
            imageid = stem
        else:
            imageid = parts[2]
            if not _SEO_NAME_RE.fullmatch(stem):
                raise InvalidPath("invalid name after the image ID")
        validate_id(imageid)
        return cls(imageid, parts[1], ext)


class ImageMiddleware:
    """Serve image variants under ``prefix``; pass everything else to ``app``."""

    def __init__(
        self,
        app: WSGIApp | None = None,
        prefix: str = "/img",
        config: Config | None = None,
        store: ImageStore | None = None,
    ) -> None:
        self.app = app or _not_found_app
        self.prefix = prefix.rstrip("/")
        self.store = store or ImageStore(config)
        self.config = self.store.config
        self.cache_root = self.config.cache_root
        self._sendfile_header = XSENDFILE_HEADERS.get(self.config.xsendfile or "")

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        path = request_path(environ)
        prefix = self.prefix
        if prefix:
            if not path.startswith(prefix + "/"):
                return self.app(environ, start_response)
            path = path[len(prefix) :]
        try:
            response = self.handle(Request(environ), path)
        except HuImagesError as exc:
            if isinstance(exc, BackendUnavailable | GenerationBusy):
                log.warning("%s %s: %s", exc.status, path, exc)
            response = error_response(exc.status, str(exc))
        except Exception:
            log.exception("unexpected error serving %r", path)
            response = error_response(500, "internal error")
        return response(environ, start_response)

    def handle(self, request: Request, path: str) -> Response:
        if request.method not in ("GET", "HEAD"):
            return error_response(405, f"method {request.method} not allowed: use GET or HEAD")
        wanted = ImageRequest.parse(path)
        size = self.store.parse_size(wanted.size_text)
        cached = self.store.cache.path(size.name, wanted.imageid, wanted.ext)
        try:
            return self.file_response(request, cached, os.lstat(cached), wanted.ext)
        except FileNotFoundError:
            pass
        return self.generate(request, wanted, size)

    def generate(self, request: Request, wanted: ImageRequest, size: Size) -> Response:
        """The expensive path: look up, fetch, scale, cache, then serve."""
        secret = self.config.secret
        signature = query_param(request.environ, "sig")
        if secret and not verify(secret, size.name, wanted.imageid, signature):
            raise SignatureError("missing or invalid signature for a variant not yet cached")
        path = self.store.variant(wanted.imageid, size, wanted.ext)
        return self.file_response(request, path, os.lstat(path), wanted.ext)

    def file_response(
        self, request: Request, path: Path, stat: os.stat_result, ext: str
    ) -> Response:
        if not S_ISREG(stat.st_mode):  # a symlink or device planted in the cache: never follow
            raise ImageNotFound("not a cached image")
        response = Response(content_type=CONTENT_TYPES[ext], conditional_response=True)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.cache_control = CACHE_CONTROL
        response.last_modified = int(stat.st_mtime)
        response.etag = f"{stat.st_size:x}-{stat.st_mtime_ns:x}"
        if self._sendfile_header:
            response.headers[self._sendfile_header] = self._sendfile_target(path)
            response.content_length = stat.st_size
            response.app_iter = []
            return response
        handle = os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb")
        wrapper = request.environ.get("wsgi.file_wrapper")
        response.app_iter = wrapper(handle, 1 << 16) if wrapper else _FileIter(handle)
        response.content_length = stat.st_size
        return response

    def _sendfile_target(self, path: Path) -> str:
        if self._sendfile_header == "X-Sendfile":
            return str(path)
        relative = path.relative_to(self.cache_root).as_posix()
        return f"{self.config.xaccel_prefix.rstrip('/')}/{relative}"


class _FileIter:
    """Fallback when the server offers no ``wsgi.file_wrapper``."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def __iter__(self) -> Iterable[bytes]:
        return iter(lambda: self.handle.read(1 << 16), b"")

    def close(self) -> None:
        self.handle.close()


def make_app(config: Config | None = None) -> ImageMiddleware:
    """The standalone application (also the gunicorn factory: ``huimages_wsgi:make_app()``)."""
    return ImageMiddleware(_not_found_app, prefix="", config=config)
