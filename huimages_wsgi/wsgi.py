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
from datetime import timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from stat import S_ISREG
from typing import Any
from urllib.parse import parse_qs
from wsgiref.handlers import format_date_time

from webob import Request, Response
from webob.etag import ETagMatcher

from .api import ApiApp
from .browse import BrowseApp
from .cache import is_plain_dir
from .config import XSENDFILE_HEADERS, Config
from .errors import (
    BackendUnavailable,
    GenerationBusy,
    HuImagesError,
    InvalidPath,
    SignatureError,
)
from .formats import CONTENT_TYPES
from .ids import validate_id
from .logs import ensure_logging
from .ops import (
    CACHE_KEY,
    ROUTE_KEY,
    SENDFILE_BYTES_KEY,
    HealthApp,
    Instrumented,
    Metrics,
    MetricsApp,
)
from .responses import only_read_methods
from .responses import text_error as error_response
from .signing import verify
from .sizes import Size
from .store import ImageStore
from .urls import split_request_uri

log = logging.getLogger("huimages_wsgi")

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]
CACHE_CONTROL = "public, max-age=31536000, immutable"
_SEO_NAME_RE = re.compile(r"[^\x00-\x20\x7f/\\]{1,200}")
_HIT_METHODS = ("GET", "HEAD")
_SIZE_MEMO_LIMIT = 256


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
    return split_request_uri(uri, environ.get("SCRIPT_NAME", ""))[1]


def query_param(environ: dict[str, Any], name: str) -> str | None:
    """One query parameter, tolerant of bytes that are not UTF-8 (WebOb raises on them)."""
    values = parse_qs(environ.get("QUERY_STRING", ""), errors="replace").get(name)
    return values[0] if values else None


def http_date(value: str) -> int | None:
    """An HTTP date as a POSIX timestamp; None for anything unparsable (RFC 9110: ignore it)."""
    try:
        when = parsedate_to_datetime(value)
        return int((when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def not_modified(environ: dict[str, Any], etag: str, mtime: int) -> bool:
    """RFC 9110 section 13.2.2: If-None-Match (weak comparison) wins over If-Modified-Since."""
    if_none_match = environ.get("HTTP_IF_NONE_MATCH")
    if if_none_match:
        return if_none_match.strip() == "*" or etag in ETagMatcher.parse(if_none_match, False)
    if_modified_since = environ.get("HTTP_IF_MODIFIED_SINCE")
    if if_modified_since:
        since = http_date(if_modified_since)
        return since is not None and mtime <= since
    return False


def drop_unusable_validators(environ: dict[str, Any]) -> None:
    """Remove the date validators RFC 9110 says to ignore when invalid (WebOb raises on some).

    An If-Modified-Since that is no date is ignored. WebOb reads an
    If-Range ending in " GMT" as a date (anything else as entity tags); one
    that is no date then can never be true, so its Range is ignored with it:
    the client gets the whole representation.
    """
    since = environ.get("HTTP_IF_MODIFIED_SINCE")
    if since is not None and http_date(since) is None:
        del environ["HTTP_IF_MODIFIED_SINCE"]
    if_range = environ.get("HTTP_IF_RANGE")
    if if_range is not None and if_range.endswith(" GMT") and http_date(if_range) is None:
        del environ["HTTP_IF_RANGE"]
        environ.pop("HTTP_RANGE", None)


def _not_found_app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    body = b"Not found\n"
    start_response(
        "404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    )
    return [body]


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
        self._fixed_headers = {
            ext: [
                ("Content-Type", content_type),
                ("X-Content-Type-Options", "nosniff"),
                ("Cache-Control", CACHE_CONTROL),
            ]
            for ext, content_type in CONTENT_TYPES.items()
        }

    @property
    def store(self) -> ImageStore:
        return self._store

    @store.setter
    def store(self, store: ImageStore) -> None:
        """Everything a cache hit needs that does not depend on the request, built once
        per store (so swapping the store never leaves the old cache or secret in use)."""
        self._store = store
        self.config = config = store.config
        self.cache_root = config.cache_root
        self._sendfile_header = XSENDFILE_HEADERS.get(config.xsendfile or "")
        self._cache_dir = str(self.cache_root)
        self._xaccel_prefix = config.xaccel_prefix.rstrip("/")
        self._size_names: dict[str, str] = {}  # URL size text -> cache directory name

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        path = request_path(environ)
        prefix = self.prefix
        if prefix:
            if not path.startswith(prefix + "/"):
                return self.app(environ, start_response)
            path = path[len(prefix) :]
        if environ.get("REQUEST_METHOD") in _HIT_METHODS and "HTTP_RANGE" not in environ:
            hit = self._cached(path)
            if hit is not None:
                answer = self._send_cached(environ, start_response, *hit)
                if answer is not None:
                    return answer
        drop_unusable_validators(environ)
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

    def _cached(self, path: str) -> tuple[str, str, str, os.stat_result] | None:
        """(size name, file name, extension, stat) when ``path`` is a cached variant.

        The fast path: no WebOb, no pathlib, no catalog, one ``lstat``. Anything
        unusual (a bad URL, a miss, a non-file) returns None and takes the full
        path below, which produces the precise error or generates the variant.
        """
        try:
            wanted = ImageRequest.parse(path)
        except HuImagesError:
            return None
        size_name = self._size_names.get(wanted.size_text)
        if size_name is None:
            try:
                size_name = self.store.parse_size(wanted.size_text).name
            except HuImagesError:
                return None
            if len(self._size_names) < _SIZE_MEMO_LIMIT:  # valid sizes only, bounded
                self._size_names[wanted.size_text] = size_name
        filename = f"{wanted.imageid}.{wanted.ext}"
        try:
            stat = os.lstat(f"{self._cache_dir}/{size_name}/{filename}")
        except OSError:
            return None
        if not S_ISREG(stat.st_mode) or not is_plain_dir(f"{self._cache_dir}/{size_name}"):
            return None  # a symlink or device planted in the cache: the full path refuses it
        return size_name, filename, wanted.ext, stat

    def _send_cached(
        self,
        environ: dict[str, Any],
        start_response: Callable,
        size_name: str,
        filename: str,
        ext: str,
        stat: os.stat_result,
    ) -> Iterable[bytes] | None:
        """Answer a GET or HEAD (not a Range) for a cached file, with the same
        headers ``file_response`` gives; None if the file vanished meanwhile."""
        etag = f"{stat.st_size:x}-{stat.st_mtime_ns:x}"
        mtime = int(stat.st_mtime)
        headers = [
            *self._fixed_headers[ext],
            ("Last-Modified", format_date_time(mtime)),
            ("ETag", f'"{etag}"'),
        ]
        if self._sendfile_header:
            headers.append((self._sendfile_header, self._sendfile_location(size_name, filename)))
        if not_modified(environ, etag, mtime):
            start_response("304 Not Modified", headers[1:])  # no Content-Type, no body
            return []
        if self._sendfile_header:
            environ[SENDFILE_BYTES_KEY] = stat.st_size
            start_response("200 OK", headers)
            return []
        headers.append(("Content-Length", str(stat.st_size)))
        if environ["REQUEST_METHOD"] == "HEAD":
            start_response("200 OK", headers)
            return []
        try:
            fd = os.open(f"{self._cache_dir}/{size_name}/{filename}", os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None  # pruned or replaced since the lstat: the full path decides
        handle = open(fd, "rb")  # noqa: SIM115 - closed by the server, through the wrapper
        start_response("200 OK", headers)
        wrapper = environ.get("wsgi.file_wrapper")
        return wrapper(handle, 1 << 16) if wrapper else _FileIter(handle)

    def _sendfile_location(self, size_name: str, filename: str) -> str:
        if self._sendfile_header == "X-Sendfile":
            return f"{self._cache_dir}/{size_name}/{filename}"
        return f"{self._xaccel_prefix}/{size_name}/{filename}"

    def handle(self, request: Request, path: str) -> Response:
        refusal = only_read_methods(request.method)
        if refusal is not None:
            return refusal
        wanted = ImageRequest.parse(path)
        size = self.store.parse_size(wanted.size_text)
        cache = self.store.cache
        cached = cache.path(size.name, wanted.imageid, wanted.ext)
        stat = cache.finished(cached)
        if stat is not None:
            try:
                return self.file_response(request, cached, stat, wanted.ext)
            except FileNotFoundError:
                pass  # pruned since the stat: make it again
        return self.generate(request, wanted, size)

    def generate(self, request: Request, wanted: ImageRequest, size: Size) -> Response:
        """The expensive path: look up, fetch, scale, cache, then serve."""
        request.environ[CACHE_KEY] = "miss"  # for ops.Instrumented: metrics and access log
        secret = self.config.secret
        signature = query_param(request.environ, "sig")
        if secret and not verify(secret, size.name, wanted.imageid, signature):
            raise SignatureError("missing or invalid signature for a variant not yet cached")
        path = self.store.variant(wanted.imageid, size, wanted.ext)
        stat = self.store.cache.finished(path)
        try:
            if stat is not None:
                return self.file_response(request, path, stat, wanted.ext)
        except FileNotFoundError:
            pass
        # pruned or purged between writing and opening: rare, and a retry makes it again
        raise GenerationBusy("the variant was removed while being served; retry")

    def file_response(
        self, request: Request, path: Path, stat: os.stat_result, ext: str
    ) -> Response:
        """``path`` as vetted by ``Cache.finished``; opened without following a link."""
        response = Response(content_type=CONTENT_TYPES[ext], conditional_response=True)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.cache_control = CACHE_CONTROL
        response.last_modified = int(stat.st_mtime)
        response.etag = f"{stat.st_size:x}-{stat.st_mtime_ns:x}"
        if self._sendfile_header:
            response.headers[self._sendfile_header] = self._sendfile_target(path)
            response.app_iter = []  # the webserver sends the file (and its length)
            request.environ[SENDFILE_BYTES_KEY] = stat.st_size
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


class Mount:
    """Service endpoints at reserved top-level names in front of the image server.

    Names start with ``_`` (``/_api``, ``/_health``, ...) and size names
    never do (``sizes.PRESET_NAME_RE``), so no endpoint can shadow an image
    URL, and an image request pays one character comparison. A routed
    request sees its name moved from PATH_INFO to SCRIPT_NAME, as under any
    WSGI mount. ``.store``/``.config`` are the image app's; setting the store
    swaps it everywhere.
    """

    def __init__(self, images: ImageMiddleware, routes: dict[str, WSGIApp | None]) -> None:
        self.images = images
        self.routes = {name: app for name, app in routes.items() if app is not None}

    @property
    def config(self) -> Config:
        return self.images.config

    @property
    def store(self) -> ImageStore:
        return self.images.store

    @store.setter
    def store(self, store: ImageStore) -> None:
        for app in (self.images, *self.routes.values()):
            if hasattr(app, "store"):
                app.store = store  # type: ignore[attr-defined]

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        path = request_path(environ)
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


def make_app(config: Config | None = None) -> WSGIApp:
    """The standalone application (also the gunicorn factory: ``huimages_wsgi:make_app()``).

    The image server at the root, the service endpoints beside it (each one
    line, switched by configuration), and around all of it the metrics and
    access log. ``ImageMiddleware`` alone stays the way to mount images in a host app.
    """
    store = ImageStore(config)
    config = store.config
    ensure_logging(config.log_format, config.access_log)
    metrics = Metrics(config.data_dir / "metrics") if config.metrics else None
    if metrics is not None and config.follow:
        metrics.follower_config = config  # the node's follower (follower.py) on /_metrics
    routes: dict[str, WSGIApp | None] = {
        "_api": ApiApp(store),  # answers 404 "disabled" until HUIMAGES_UPLOAD_TOKEN is set
        "_health": HealthApp(store) if config.health else None,
        "_metrics": MetricsApp(metrics) if metrics else None,
        "_browse": BrowseApp(store) if config.browse else None,
    }
    app: WSGIApp = Mount(ImageMiddleware(_not_found_app, prefix="", store=store), routes)
    if metrics or config.access_log:
        app = Instrumented(app, metrics, log_requests=config.access_log)
    return app
