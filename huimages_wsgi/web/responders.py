"""Every HTTP answer for a cached file: headers, validators, 304, Range, HEAD, X-Sendfile.

``FileResponder.respond`` is the only way a variant is answered, whether it
was a cache hit or made a moment ago (whitenoise's ``StaticFile.get_response``
is the model). A plain GET or HEAD, by far the most common request, is
answered straight through ``start_response`` with the headers built once per
extension: no WebOb objects, no pathlib, one ``open``. A Range request goes
through WebOb's ``conditional_response``, which owns 206, 416 and If-Range;
both answers carry the same headers, built by ``FileResponder.headers``.

Usage::

    responder = FileResponder.from_config(config)
    cached = cache.lookup(size.name, imageid, ext)
    return responder.respond(environ, start_response, cached)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any, BinaryIO
from wsgiref.handlers import format_date_time

from webob import Response
from webob.etag import ETagMatcher

from ..cache.directory import CachedFile
from ..core.config import DEFAULT_XACCEL_PREFIX, XSENDFILE_HEADERS, Config
from ..core.formats import SERVED_TYPES
from .environ_keys import SENDFILE_BYTES_KEY

#: Variants never change under their URL: a new image is a new ID.
CACHE_CONTROL = "public, max-age=31536000, immutable"
#: Every image answer is inert: an original is the user's bytes (a JPEG may carry HTML
#: after its image), so a browser must neither sniff it nor run anything it holds.
INERT_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", "sandbox; default-src 'none'"),
)
CHUNK = 1 << 16


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


def etag_of(cached: CachedFile) -> str:
    """Size and nanosecond mtime: changes whenever the file is made again."""
    return f"{cached.stat.st_size:x}-{cached.stat.st_mtime_ns:x}"


class FileResponder:
    """Answers GET and HEAD for cached files under one cache root."""

    def __init__(
        self, cache_root: str | os.PathLike[str], sendfile: str | None = None,
        xaccel_prefix: str = DEFAULT_XACCEL_PREFIX,
    ) -> None:
        self.cache_root = str(cache_root)
        #: "X-Sendfile" or "X-Accel-Redirect": the webserver sends the file itself.
        self.sendfile_header = XSENDFILE_HEADERS.get(sendfile or "")
        self.xaccel_prefix = xaccel_prefix.rstrip("/")
        self._dates: dict[int, str] = {}  # Last-Modified by mtime: most hits share a few
        self._fixed = {
            ext: (("Content-Type", content_type), *INERT_HEADERS, ("Cache-Control", CACHE_CONTROL))
            for ext, content_type in SERVED_TYPES.items()
        }

    @classmethod
    def from_config(cls, config: Config) -> FileResponder:
        return cls(config.cache_root, config.xsendfile, config.xaccel_prefix)

    def headers(self, cached: CachedFile, etag: str) -> list[tuple[str, str]]:
        """What every answer about ``cached`` says (200, 206 and, less Content-Type, 304)."""
        mtime = int(cached.stat.st_mtime)
        date = self._dates.get(mtime)
        if date is None:
            if len(self._dates) >= 4096:
                self._dates.clear()
            date = self._dates[mtime] = format_date_time(mtime)
        headers = [
            *self._fixed[cached.ext],
            ("Last-Modified", date),
            ("ETag", f'"{etag}"'),
        ]
        if self.sendfile_header:
            headers.append((self.sendfile_header, self.sendfile_target(cached)))
        return headers

    def sendfile_target(self, cached: CachedFile) -> str:
        """X-Sendfile names the file; X-Accel-Redirect an internal URL below the prefix."""
        if self.sendfile_header == "X-Sendfile":
            return cached.path
        return f"{self.xaccel_prefix}/{cached.relative}"

    def respond(
        self, environ: dict[str, Any], start_response: Callable, cached: CachedFile
    ) -> Iterable[bytes] | None:
        """The answer to a GET or HEAD for ``cached``; None, before anything was sent,
        when the file was pruned or replaced since it was looked up."""
        if "HTTP_RANGE" in environ:
            return self._ranged(environ, start_response, cached)
        stat = cached.stat
        etag = etag_of(cached)
        headers = self.headers(cached, etag)
        if not_modified(environ, etag, int(stat.st_mtime)):
            start_response("304 Not Modified", headers[1:])  # no Content-Type, no body
            return []
        if self.sendfile_header:
            environ[SENDFILE_BYTES_KEY] = stat.st_size
            start_response("200 OK", headers)  # the webserver sends the file and its length
            return []
        headers.append(("Content-Length", str(stat.st_size)))
        if environ["REQUEST_METHOD"] == "HEAD":
            start_response("200 OK", headers)
            return []
        handle = self._open(cached)
        if handle is None:
            return None
        start_response("200 OK", headers)
        return self._body(environ, handle)

    def _ranged(
        self, environ: dict[str, Any], start_response: Callable, cached: CachedFile
    ) -> Iterable[bytes] | None:
        """Range and If-Range through WebOb's conditional response (206, 416, or the whole)."""
        drop_unusable_validators(environ)
        response = Response(conditional_response=True)
        response.headerlist = self.headers(cached, etag_of(cached))
        if self.sendfile_header:
            environ[SENDFILE_BYTES_KEY] = cached.stat.st_size
            response.app_iter = []  # the webserver sends the file (and its length)
        else:
            handle = self._open(cached)
            if handle is None:
                return None
            response.app_iter = self._body(environ, handle)
            response.content_length = cached.stat.st_size
        return response(environ, start_response)

    @staticmethod
    def _open(cached: CachedFile) -> BinaryIO | None:
        try:  # never through a link planted since the lookup
            fd = os.open(cached.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        return open(fd, "rb")  # noqa: SIM115 - closed by the server, through the wrapper

    @staticmethod
    def _body(environ: dict[str, Any], handle: BinaryIO) -> Iterable[bytes]:
        wrapper = environ.get("wsgi.file_wrapper")
        return wrapper(handle, CHUNK) if wrapper else FileIter(handle)


class FileIter:
    """Fallback when the server offers no ``wsgi.file_wrapper``."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle

    def __iter__(self) -> Iterator[bytes]:
        return iter(lambda: self.handle.read(CHUNK), b"")

    def close(self) -> None:
        self.handle.close()
