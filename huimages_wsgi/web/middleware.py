"""``ImageMiddleware``: image variants under a prefix, every other request to the wrapped app.

Usage::

    from huimages_wsgi import Config, ImageMiddleware

    app = ImageMiddleware(app, prefix="/img", config=Config(data_dir="/srv/images"))

It answers ``<prefix>/<size>/<ID>.<ext>`` and the SEO form
``<prefix>/<size>/<ID>/<name>.<ext>``. A request goes parse → lookup →
(miss: make) → respond, each step in the module named after it:
``urls.ImageRequest`` and ``sizes.SizeRules`` parse, ``cache.Cache.lookup``
finds the file, ``render.Renderer`` makes a missing one, and
``responders.FileResponder`` answers. A cache hit costs two ``lstat`` calls
and no catalog query. Every expected failure is a short plain-text answer
with a precise status; nothing unexpected leaks a stack trace.

This module imports neither the HTTP API, nor the browse pages, nor the
metrics: a host application that mounts images gets images and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from webob import Response

from ..cache.directory import CachedFile
from ..core.config import Config
from ..core.errors import (
    GenerationBusy,
    HuImagesError,
    InvalidImageId,
    InvalidPath,
    InvalidSize,
    MethodNotAllowed,
    Moved,
    SignatureError,
)
from ..core.formats import accepted_format, ext_for_type
from ..core.legacy import legacy_request
from ..core.signing import verify
from ..core.sizes import Size
from ..core.urls import ImageRequest, image_path, mounted_url, query_param, request_path
from ..store.imagestore import ImageStore
from .environ_keys import CACHE_KEY
from .responders import FileResponder
from .responses import READ_METHODS, guarded, redirect, text_error

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


def not_found_app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    """The app behind the middleware when none is given: 404 for anything not an image."""
    return text_error(404, "Not found")(environ, start_response)


class ImageMiddleware:
    """Serve image variants under ``prefix``; pass everything else to ``app``."""

    def __init__(
        self,
        app: WSGIApp | None = None,
        prefix: str = "/img",
        config: Config | None = None,
        store: ImageStore | None = None,
    ) -> None:
        self.app = app or not_found_app
        self.prefix = prefix.rstrip("/")
        self.store = store or ImageStore(config)
        # everything a request needs that does not depend on the request
        self.config = self.store.config
        self.sizes = self.store.sizes
        self.responder = FileResponder.from_config(self.config)
        self.admission = self.store.admission  # renders at once, queue, wait: with uploads

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        path = self.image_path(environ)
        if path is None:
            return self.app(environ, start_response)
        return guarded(
            lambda: self.serve(environ, start_response, path),
            lambda exc: self.error(environ, path, exc)(environ, start_response),
            lambda: f"{environ.get('REQUEST_METHOD')} {path!r}",
        )

    def error(self, environ: dict[str, Any], path: str, exc: HuImagesError) -> Response:
        """The short answer to a failure; a huImages link's 301 to where its variant is."""
        if isinstance(exc, Moved):
            return redirect(mounted_url(environ, path, exc.path, self.prefix), str(exc))
        return text_error(exc.status, exc.client_message())

    def serve(
        self, environ: dict[str, Any], start_response: Callable, path: str
    ) -> Iterable[bytes]:
        """parse → lookup → (miss: make) → respond; failures raise HuImagesError."""
        wanted, size = self.parse(environ, path)
        canonical = self.canonical_url(environ, path, wanted)
        served, vary = self.negotiated(environ, wanted, size)
        cached = self.store.cache.lookup(size.name, served.imageid, served.ext)
        if cached is not None:
            answer = self.responder.respond(environ, start_response, cached, canonical, vary)
            if answer is not None:
                return answer  # else pruned since the lookup: make it again
        made = self.make(environ, wanted, size, served)
        answer = self.responder.respond(environ, start_response, made, canonical, vary)
        if answer is None:  # pruned or purged between making and opening: rare
            raise GenerationBusy("the variant was removed while being served; retry")
        return answer

    def negotiated(
        self, environ: dict[str, Any], wanted: ImageRequest, size: Size
    ) -> tuple[ImageRequest, bool]:
        """The variant to serve, and whether the choice followed ``Accept``: with
        HUIMAGES_AUTO_FORMAT, a ``.jpeg`` variant in the first of HUIMAGES_AUTO_FORMATS
        the client names (the same cache file as that format's own URL)."""
        if not self.config.auto_format or wanted.ext != "jpeg" or size.is_original:
            return wanted, False
        chosen = accepted_format(environ.get("HTTP_ACCEPT", ""), self.config.auto_formats)
        if chosen is None:
            return wanted, True
        return ImageRequest(wanted.imageid, wanted.size_text, chosen), True

    def canonical_url(
        self, environ: dict[str, Any], path: str, wanted: ImageRequest
    ) -> str | None:
        """For an SEO URL (``/<size>/<ID>/<name>.<ext>``), the canonical one under the
        client's mount, without a query; None for a canonical URL."""
        if path.count("/") != 3:
            return None
        target = image_path(wanted.imageid, wanted.size_text, wanted.ext)
        return mounted_url({**environ, "QUERY_STRING": ""}, path, target, self.prefix)

    def image_path(self, environ: dict[str, Any]) -> str | None:
        """The path below the prefix, or None when the request is not ours."""
        path = request_path(environ)
        if not self.prefix:
            return path
        if not path.startswith(self.prefix + "/"):
            return None
        return path[len(self.prefix) :]

    def parse(self, environ: dict[str, Any], path: str) -> tuple[ImageRequest, Size]:
        """The variant asked for and its size; 405, 404 or 400 otherwise, and a 301
        for a link huImages answered that names a variant in another way."""
        method = environ.get("REQUEST_METHOD", "")
        if method not in READ_METHODS:
            raise MethodNotAllowed(f"method {method} not allowed: use GET or HEAD")
        try:
            wanted = ImageRequest.parse(path)
            return wanted, self.sizes.parse(wanted.size_text)
        except (InvalidPath, InvalidImageId, InvalidSize):
            moved = self.canonical_path(path)
            if moved is None or moved == path:
                raise
            raise Moved("this link of huImages has moved", moved) from None

    def canonical_path(self, path: str) -> str | None:
        """Where the variant a huImages link names is now (legacy.py), or None."""
        old = legacy_request(path)
        if old is None:
            return None
        self.sizes.parse(old.size_text)  # refused sizes stay refused (400, 403)
        ext = old.ext
        if ext is None:  # o/<ID>: at the original's own extension; 404 if there is none
            renderer = self.store.renderer
            ext = ext_for_type(renderer.original_type(old.imageid, renderer.live_doc(old.imageid)))
        return image_path(old.imageid, old.size_text, ext)

    def make(
        self, environ: dict[str, Any], wanted: ImageRequest, size: Size,
        served: ImageRequest | None = None,
    ) -> CachedFile:
        """The expensive path: check the signature (of the URL asked for), then render
        ``served`` (once) into the cache, holding a render slot (admission.py: a 503
        when the node expects to be busy longer than HUIMAGES_RENDER_WAIT)."""
        served = served or wanted
        environ[CACHE_KEY] = "miss"  # for the instrumentation: metrics and access log
        secret = self.config.secret
        if secret and size.is_original:  # a huImages link moves whether signed or not
            self.store.renderer.check_original_ext(wanted.imageid, wanted.ext)
        signature = query_param(environ, "sig")
        if secret and not verify(secret, size.name, wanted.imageid, wanted.ext, signature):
            raise SignatureError("missing or invalid signature for a variant not yet cached")
        return self.store.renderer.variant(served.imageid, size, served.ext, self.admission)
