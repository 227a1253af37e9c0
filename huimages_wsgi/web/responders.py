"""Every HTTP answer for a cached file: headers, validators, 304, 412, Range, HEAD, X-Sendfile.

``FileResponder.respond`` is the only way a variant is answered, whether it
was a cache hit or made a moment ago (whitenoise's ``StaticFile.get_response``
is the model). A plain GET or HEAD, by far the most common request, is
answered straight through ``start_response`` with the headers built once per
extension: no WebOb objects, no pathlib, one ``open``. A request with
conditional headers or a Range is decided by ``conditional.evaluate``
(RFC 9110: 304, 412, 206 with one part or ``multipart/byteranges``, 416);
every answer about the file carries the same headers, built by
``FileResponder.headers``.

The validator is ``Last-Modified`` alone: the file's mtime, which the
renderer sets from the catalog, so it is the same on every node and from
every webserver in front (conditional.py says why there is no ETag). Each
answer names its image in the surrogate-key headers (``Surrogate-Key``, or
what HUIMAGES_SURROGATE_HEADERS says: ``xkey``, ``Cache-Tag``), by which a
shared cache purges every size of an image at once; an SEO URL names its
canonical URL in ``Link: <...>; rel="canonical"``.

Usage::

    responder = FileResponder.from_config(config)
    cached = cache.lookup(size.name, imageid, ext)
    return responder.respond(environ, start_response, cached)
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO
from wsgiref.handlers import format_date_time

from ..cache.directory import CachedFile
from ..core.config import DEFAULT_XACCEL_PREFIX, XSENDFILE_HEADERS, Config
from ..core.formats import SERVED_TYPES
from .conditional import FULL, Outcome, evaluate
from .environ_keys import SENDFILE_BYTES_KEY
from .responses import text_error

#: Variants never change under their URL: a new image is a new ID.
CACHE_CONTROL = "public, max-age=31536000, immutable"
#: Every image answer is inert: an original is the user's bytes (a JPEG may carry HTML
#: after its image), so a browser must neither sniff it nor run anything it holds.
INERT_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", "sandbox; default-src 'none'"),
)
CHUNK = 1 << 16
#: The request headers that make an answer anything but a plain 200.
CONDITIONAL_KEYS = (
    "HTTP_RANGE", "HTTP_IF_MATCH", "HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE",
    "HTTP_IF_UNMODIFIED_SINCE",
)


class FileResponder:
    """Answers GET and HEAD for cached files under one cache root."""

    def __init__(
        self, cache_root: str | os.PathLike[str], sendfile: str | None = None,
        xaccel_prefix: str = DEFAULT_XACCEL_PREFIX,
        surrogate_headers: tuple[str, ...] = ("Surrogate-Key",),
    ) -> None:
        self.cache_root = str(cache_root)
        #: "X-Sendfile" or "X-Accel-Redirect": the webserver sends the file itself.
        self.sendfile_header = XSENDFILE_HEADERS.get(sendfile or "")
        self.xaccel_prefix = xaccel_prefix.rstrip("/")
        self.surrogate_headers = surrogate_headers
        self._dates: dict[int, str] = {}  # Last-Modified by mtime: most hits share a few
        self._fixed = {
            ext: (("Content-Type", content_type), *INERT_HEADERS,
                  ("Cache-Control", CACHE_CONTROL), ("Accept-Ranges", "bytes"))
            for ext, content_type in SERVED_TYPES.items()
        }

    @classmethod
    def from_config(cls, config: Config) -> FileResponder:
        return cls(config.cache_root, config.xsendfile, config.xaccel_prefix,
                   config.surrogate_headers)

    def headers(self, cached: CachedFile, canonical: str | None = None) -> list[tuple[str, str]]:
        """What every answer about ``cached`` says (200, 206 and, less Content-Type, 304)."""
        mtime = int(cached.stat.st_mtime)
        date = self._dates.get(mtime)
        if date is None:
            if len(self._dates) >= 4096:
                self._dates.clear()
            date = self._dates[mtime] = format_date_time(mtime)
        headers = [*self._fixed[cached.ext], ("Last-Modified", date)]
        headers.extend((name, cached.imageid) for name in self.surrogate_headers)
        if canonical is not None:
            headers.append(("Link", f'<{canonical}>; rel="canonical"'))
        if self.sendfile_header:
            headers.append((self.sendfile_header, self.sendfile_target(cached)))
        return headers

    def sendfile_target(self, cached: CachedFile) -> str:
        """X-Sendfile names the file; X-Accel-Redirect an internal URL below the prefix."""
        if self.sendfile_header == "X-Sendfile":
            return cached.path
        return f"{self.xaccel_prefix}/{cached.relative}"

    def respond(
        self, environ: dict[str, Any], start_response: Callable, cached: CachedFile,
        canonical: str | None = None, vary: bool = False,
    ) -> Iterable[bytes] | None:
        """The answer to a GET or HEAD for ``cached``; None, before anything was sent,
        when the file was pruned or replaced since it was looked up. ``canonical``: the
        canonical URL of the variant, for an SEO URL's Link header; ``vary``: the
        format was chosen by the request's Accept."""
        stat = cached.stat
        outcome = FULL
        if any(key in environ for key in CONDITIONAL_KEYS):
            outcome = evaluate(environ, int(stat.st_mtime), stat.st_size,
                               stable_bytes=cached.relative.startswith("o/"))
        if outcome.status in (412, 416):
            return self.refuse(outcome, stat.st_size)(environ, start_response)
        headers = self.headers(cached, canonical)
        if vary:
            headers.append(("Vary", "Accept"))
        if outcome.status == 304:
            start_response("304 Not Modified", headers[1:])  # no Content-Type, no body
            return []
        if self.sendfile_header:  # the webserver sends the file, its length and any Range
            environ[SENDFILE_BYTES_KEY] = stat.st_size
            start_response("200 OK", headers)
            return []
        if outcome.status == 206:
            return self.partial(environ, start_response, cached, headers, outcome.ranges)
        headers.append(("Content-Length", str(stat.st_size)))
        if environ["REQUEST_METHOD"] == "HEAD":
            start_response("200 OK", headers)
            return []
        handle = self._open(cached)
        if handle is None:
            return None
        start_response("200 OK", headers)
        return self._body(environ, handle)

    @staticmethod
    def refuse(outcome: Outcome, size: int) -> Any:
        """412 (a precondition failed) or 416 (no range of the file was asked for)."""
        if outcome.status == 412:
            return text_error(412, "precondition failed: this image was not modified so")
        response = text_error(416, f"range not satisfiable: the file has {size} bytes")
        response.headers["Content-Range"] = f"bytes */{size}"
        return response

    def partial(
        self, environ: dict[str, Any], start_response: Callable, cached: CachedFile,
        headers: list[tuple[str, str]], ranges: tuple[tuple[int, int], ...],
    ) -> Iterable[bytes] | None:
        """206: one range as itself, several as ``multipart/byteranges`` (RFC 9110 14.6)."""
        size = cached.stat.st_size
        handle = self._open(cached)
        if handle is None:
            return None
        if len(ranges) == 1:
            first, last = ranges[0]
            headers.extend((("Content-Range", f"bytes {first}-{last}/{size}"),
                            ("Content-Length", str(last - first + 1))))
            start_response("206 Partial Content", headers)
            return RangeIter(handle, [(b"", first, last)], b"")
        content_type = headers[0][1]
        boundary = secrets.token_hex(12)
        parts = [
            (f"--{boundary}\r\nContent-Type: {content_type}\r\n"
             f"Content-Range: bytes {first}-{last}/{size}\r\n\r\n".encode(), first, last)
            for first, last in ranges
        ]
        parts = [(b"\r\n" + head if index else head, first, last)
                 for index, (head, first, last) in enumerate(parts)]
        tail = f"\r\n--{boundary}--\r\n".encode()
        length = sum(len(head) + last - first + 1 for head, first, last in parts) + len(tail)
        headers[0] = ("Content-Type", f"multipart/byteranges; boundary={boundary}")
        headers.append(("Content-Length", str(length)))
        start_response("206 Partial Content", headers)
        return RangeIter(handle, parts, tail)

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


class RangeIter:
    """The bytes of a 206: each part's head, then its slice of the file; then the tail."""

    def __init__(self, handle: BinaryIO, parts: list[tuple[bytes, int, int]], tail: bytes) -> None:
        self.handle, self.parts, self.tail = handle, parts, tail

    def __iter__(self) -> Iterator[bytes]:
        for head, first, last in self.parts:
            if head:
                yield head
            self.handle.seek(first)
            left = last - first + 1
            while left > 0:
                chunk = self.handle.read(min(CHUNK, left))
                if not chunk:  # the file shrank under us: end the answer short
                    return
                left -= len(chunk)
                yield chunk
        if self.tail:
            yield self.tail

    def close(self) -> None:
        self.handle.close()


class FileIter:
    """Fallback when the server offers no ``wsgi.file_wrapper``."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle

    def __iter__(self) -> Iterator[bytes]:
        return iter(lambda: self.handle.read(CHUNK), b"")

    def close(self) -> None:
        self.handle.close()
