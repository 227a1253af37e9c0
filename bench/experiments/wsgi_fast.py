"""EXPERIMENT (bench only): a cache-hit fast path for huimages_wsgi.wsgi.

``FastHitMiddleware`` answers the common case - a plain ``GET`` without
``If-None-Match``, ``If-Modified-Since`` or ``Range`` for a canonical
``/<size>/<ID>.<ext>`` URL whose variant is cached - with a pre-built header
list, no WebOb objects and one ``open`` + ``fstat``. Everything else (misses,
conditional and range requests, HEAD, SEO-name URLs, X-Sendfile mode, errors)
goes through the unchanged ImageMiddleware code, so the semantics are the
original's. The response headers are byte-identical to the original's for a
hit (checked by bench/profile.py).

Served by gunicorn for the end-to-end measurement as
``gunicorn bench.experiments.fast_app:app`` with HUIMAGES_DATA_DIR set.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from email.utils import formatdate
from pathlib import Path
from typing import Any

from webob import Request, Response

from huimages_wsgi.config import Config
from huimages_wsgi.errors import HuImagesError
from huimages_wsgi.ids import is_valid_id
from huimages_wsgi.wsgi import (
    CACHE_CONTROL,
    CONTENT_TYPES,
    ImageMiddleware,
    ImageRequest,
    _FileIter,
    _not_found_app,
    request_path,
)

_SLOW_HEADERS = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE", "HTTP_RANGE")


class FastHitMiddleware(ImageMiddleware):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._root = str(self.cache_root)
        self._sizes: dict[str, str] = {}  # size text -> cache dir name, successes only

    def _size_name(self, text: str) -> str | None:
        name = self._sizes.get(text)
        if name is None:
            try:
                name = self.store.parse_size(text).name
            except HuImagesError:
                return None
            if len(self._sizes) < 1024:
                self._sizes[text] = name
        return name

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if (
            environ.get("REQUEST_METHOD") == "GET"
            and not self._sendfile_header
            and not any(key in environ for key in _SLOW_HEADERS)
        ):
            answer = self._hit(environ, start_response)
            if answer is not None:
                return answer
        return super().__call__(environ, start_response)

    def _hit(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes] | None:
        path = request_path(environ)
        if self.prefix:
            if not path.startswith(self.prefix + "/"):
                return None
            path = path[len(self.prefix) :]
        parts = path.split("/")
        if len(parts) != 3 or parts[0]:
            return None
        imageid, dot, ext = parts[2].rpartition(".")
        if not dot or ext not in CONTENT_TYPES or not is_valid_id(imageid):
            return None
        size_name = self._size_name(parts[1])
        if size_name is None:
            return None
        try:
            fd = os.open(f"{self._root}/{size_name}/{imageid}.{ext}", os.O_RDONLY)
        except OSError:
            return None  # a miss (or anything odd): the full path decides
        handle = os.fdopen(fd, "rb")
        st = os.fstat(fd)
        start_response(
            "200 OK",
            [
                ("Content-Type", CONTENT_TYPES[ext]),
                ("X-Content-Type-Options", "nosniff"),
                ("Cache-Control", CACHE_CONTROL),
                ("Last-Modified", formatdate(int(st.st_mtime), usegmt=True)),
                ("ETag", f'"{st.st_size:x}-{st.st_mtime_ns:x}"'),
                ("Content-Length", str(st.st_size)),
            ],
        )
        wrapper = environ.get("wsgi.file_wrapper")
        return wrapper(handle, 1 << 16) if wrapper else _FileIter(handle)


class LeanResponseMiddleware(ImageMiddleware):
    """The smaller change: keep WebOb (and its conditional/Range handling) but
    build the hit Response from a ready header list instead of five property
    setters, and skip pathlib on the hit path."""

    def handle(self, request: Request, path: str) -> Response:
        if request.method not in ("GET", "HEAD"):
            return super().handle(request, path)
        wanted = ImageRequest.parse(path)
        size = self.store.parse_size(wanted.size_text)
        cached = f"{self.cache_root}/{size.name}/{wanted.imageid}.{wanted.ext}"
        try:
            return self.file_response(request, cached, os.stat(cached), wanted.ext)
        except FileNotFoundError:
            pass
        return self.generate(request, wanted, size)

    def file_response(
        self, request: Request, path: Any, stat: os.stat_result, ext: str
    ) -> Response:
        if self._sendfile_header:
            return super().file_response(request, Path(path), stat, ext)
        headers = [
            ("Content-Type", CONTENT_TYPES[ext]),
            ("X-Content-Type-Options", "nosniff"),
            ("Cache-Control", CACHE_CONTROL),
            ("Last-Modified", formatdate(int(stat.st_mtime), usegmt=True)),
            ("ETag", f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'),
            ("Content-Length", str(stat.st_size)),
        ]
        handle = open(path, "rb")  # noqa: SIM115 - closed by the file wrapper
        wrapper = request.environ.get("wsgi.file_wrapper")
        app_iter = wrapper(handle, 1 << 16) if wrapper else _FileIter(handle)
        return Response(headerlist=headers, app_iter=app_iter, conditional_response=True)


def make_app(
    config: Config | None = None, store: Any = None, kind: str = "fast"
) -> ImageMiddleware:
    cls = LeanResponseMiddleware if kind == "lean" else FastHitMiddleware
    return cls(_not_found_app, prefix="", config=config, store=store)
