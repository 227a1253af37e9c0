"""The browse page: recent images, one image at a time, and an upload form.

A small WSGI application, mounted at ``/_browse`` by ``make_app`` when
``Config.browse`` is on. Plain server-rendered HTML with a little inline CSS
and no JavaScript; every value is escaped. Pages link to each other and to
the images with relative URLs (``../480x320/<ID>.jpeg``), so the page works
whatever host name, port or mount point it is reached on, and behind a web
server the thumbnails come straight from the cache directory like any image.

Who may browse and upload (every page, the listing and next/previous too):

- with ``HUIMAGES_UPLOAD_TOKEN`` set, whoever has that token: typed once into
  the page's token form (``/login``), which sets a session cookie
  (auth.session_cookie), or sent as ``Authorization: Bearer``;
- without one, only someone on the machine itself talking to the server
  directly (auth.is_local_client). That is the ``huimages serve`` quick
  start; anyone else gets a 403 saying what to set.

Who is asking is decided before a byte of a body is read: a refused upload is
answered at once, and the token form's own post is read up to ``LOGIN_LIMIT``
only (413 beyond). A cross-site post (an ``Origin`` that is not this server)
is refused, and an upload passes the same validation as every other upload.
"""

from __future__ import annotations

import html
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs, urlencode

from webob import Request, Response

from ..core.config import Config
from ..core.errors import BackendUnavailable, HuImagesError
from ..core.ids import validate_id
from ..store.finding import find_images, tag_counts
from ..store.imagestore import ImageStore
from ..store.links import newest_title
from .auth import (
    SESSION_COOKIE,
    SESSION_SECONDS,
    bearer_token,
    is_local_client,
    session_cookie,
    session_ok,
    token_ok,
)
from .focuspage import focus_form, set_focus_by_click
from .pagestyle import STYLE
from .responses import RETRY_AFTER, guarded
from .uploads import TEXT_LIMIT, check_encodable, read_body, read_form, upload_metadata

log = logging.getLogger("huimages_wsgi")

THUMB_SIZE = "150x150!"
DETAIL_SIZE = "svga"
DETAIL_FORMATS = ("avif", "webp")
PAGE_SIZE = 48
TAG_LIST = 40  # tags shown, the most used first
LOGIN_LIMIT = 4096  # bytes of the token form's post: the one body read before knowing who
_RELATIVE_ROOT = ".."  # every page sits directly below the mount point
_STAMP_RE = re.compile(r"(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)(?:\.\d*)?")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def encodable(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD, so it encodes as UTF-8.

    Documents stored before the API refused such text (or written straight
    into the catalog) still carry them; one of them must not turn a whole
    page into a 500.
    """
    return _SURROGATE_RE.sub("\ufffd", text)


def _when(stamp: object) -> str:
    """``20090129T123456.000123`` (the catalog's timestamps) as ``2009-01-29 12:34:56``."""
    text = str(stamp or "?")
    match = _STAMP_RE.fullmatch(text)
    return "{}-{}-{} {}:{}:{}".format(*match.groups()) if match else text


def same_origin(request: Request) -> bool:
    """No ``Origin`` (old browsers, curl) or this server's own one."""
    origin = request.headers.get("Origin")
    return origin is None or origin == request.host_url


class BrowseApp:
    """The pages below the mount point: ``/``, ``/<ID>``, ``/random``, ``/upload``, ``/login``."""

    def __init__(
        self, store: ImageStore, page_size: int = PAGE_SIZE, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.page_size = page_size
        self.clock = clock  # for the session cookie's expiry

    @property
    def config(self) -> Config:
        return self.store.config

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        response = guarded(
            lambda: self.route(request), self.error_page,
            lambda: f"browse {request.method} {environ.get('PATH_INFO')!r}",
        )
        return response(environ, start_response)

    def error_page(self, exc: HuImagesError) -> Response:
        if isinstance(exc, BackendUnavailable):
            response = self.page("Storage unavailable", f"<p>{_e(exc.client_message())}</p>",
                                 status=503)
            response.headers["Retry-After"] = RETRY_AFTER
            return response
        return self.page("Error", f'<p class="error">{_e(exc.client_message())}</p>',
                         status=exc.status)

    # -- routing -------------------------------------------------------------

    def route(self, request: Request) -> Response:
        path = request.environ.get("PATH_INFO", "")  # as sent: WebOb's decoding may raise
        if path == "":
            return self.redirect(request, "/", status=301)
        if path == "/login":
            return self.login(request)
        if not self.allowed(request):
            return self.refused(request)  # before reading anything of a body
        if path == "/upload":
            if request.method != "POST":
                return self.not_allowed("POST")
            return self.upload(request)
        if path.endswith("/focus") and path.count("/") == 2:
            if request.method != "POST":
                return self.not_allowed("POST")
            return self.focus(request, validate_id(path[1:-len("/focus")]))
        if request.method not in ("GET", "HEAD"):
            return self.not_allowed("GET, HEAD")
        if path == "/":
            return self.index(request)
        if path == "/random":
            imageid = self.store.get_random_imageid()
            return self.redirect(request, f"/{imageid}" if imageid else "/")
        name = path[1:]
        if "/" in name:
            return self.page("Not found", "<p>No such page.</p>", status=404)
        return self.detail(request, validate_id(name))

    # -- pages ---------------------------------------------------------------

    def index(self, request: Request, error: str = "", status: int = 200) -> Response:
        """The newest images, or those of one tag (``?tag=red``), with the tag list."""
        tag = request.GET.get("tag", "")
        check_encodable(tag, "tag")
        if tag:
            ids = find_images(self.store.catalog, tag=tag, limit=self.page_size)
        else:
            ids = self.store.catalog.recent_ids(self.page_size)
        items = "".join(self._thumb(imageid) for imageid in ids)
        grid = f'<ul class="grid">{items}</ul>' if ids else '<p class="note">No images yet.</p>'
        body = self._error(error) + self._form() + self._tags(tag) + grid
        return self.page(f"Tagged {tag}" if tag else "Recent images", body, status=status)

    def _tags(self, current: str) -> str:
        """The tags with their counts, the most used first, each a link to its images."""
        counts = tag_counts(self.store.catalog, TAG_LIST)
        links = "".join(
            f'<a class="{"tag current" if tag == current else "tag"}"'
            f' href="./?{_e(urlencode({"tag": tag}))}">{_e(tag)} <small>{count}</small></a>'
            for tag, count in counts)
        return f'<nav id="tags" class="pager">{links}</nav>' if counts else ""

    def detail(self, request: Request, imageid: str) -> Response:
        doc = self.store.get_imagedoc(imageid)
        title = newest_title(doc)
        previous = self.store.get_previous_imageid(imageid)
        following = self.store.get_next_imageid(imageid)
        pager = (
            '<nav class="pager">'
            + self._link(previous, "\u2190 previous", "prev")
            + self._link(following, "next \u2192", "next")
            + '<a id="random" href="random">random</a>'
            + '<a id="all" href="./">all images</a></nav>'
        )
        image = self._tag(imageid, DETAIL_SIZE, formats=DETAIL_FORMATS, doc=doc, id="image")
        facts = [
            ("ID", imageid),
            ("Size", f"{doc.get('width', '?')} \u00d7 {doc.get('height', '?')} pixels"),
            ("Bytes", doc.get("length", "?")),
            ("Uploaded", _when(doc.get("ctime"))),
        ]
        ext = self.store.original_ext(imageid, doc)  # o/<ID>.heic for a HEIC (core/formats.py)
        body = (
            pager
            + f'<div class="detail">{image}</div>'
            + focus_form(self.store, imageid, doc, _RELATIVE_ROOT)
            + "<dl>"
            + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
            + f"<dt>Original</dt><dd>{self._original(imageid, ext)}</dd></dl>"
        )
        return self.page(title or imageid, body)

    def focus(self, request: Request, imageid: str) -> Response:
        """A click on the focus form's image: crops centre there (focuspage.py)."""
        if not same_origin(request):
            return self.page("Not from here", "<p>This form only accepts its own page.</p>", 403)
        set_focus_by_click(self.store, imageid, read_body(request.environ, LOGIN_LIMIT, "focus"))
        return self.redirect(request, f"/{imageid}")

    # -- who is asking --------------------------------------------------------

    def allowed(self, request: Request) -> bool:
        """The token (a session cookie or a bearer header) when one is set, else a local client."""
        if not self.config.upload_token:
            return is_local_client(request.environ)
        if token_ok(self.config, bearer_token(request.environ)):
            return True
        return session_ok(self.config, request.cookies.get(SESSION_COOKIE), self.clock())

    def refused(self, request: Request, error: str = "", status: int = 401) -> Response:
        """401 with the token form, or 403 where no token is set (local clients only)."""
        if not self.config.upload_token:
            return self.page("Not from here", (
                '<p class="error" role="alert">Browsing and uploading from here needs'
                " HUIMAGES_UPLOAD_TOKEN on the server; without it, only a browser on the"
                " server's own machine, talking to it directly, may.</p>"), status=403)
        form = (
            '<form id="login" method="post" action="login">'
            '<label>Token <input type="password" name="token" required'
            ' autocomplete="current-password"></label><button type="submit">Sign in</button>'
            "</form>"
        )
        note = '<p class="note">The server\'s HUIMAGES_UPLOAD_TOKEN opens these pages.</p>'
        response = self.page("Sign in", self._error(error) + form + note, status=status)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="huimages"'
        return response

    def login(self, request: Request) -> Response:
        """The token form: a session cookie for the right token (303 to the index)."""
        if request.method != "POST":
            if request.method not in ("GET", "HEAD"):
                return self.not_allowed("GET, HEAD, POST")
            return self.redirect(request, "/") if self.allowed(request) else self.refused(request)
        if not self.config.upload_token or not same_origin(request):
            return self.refused(request, "This form only accepts posts from its own page.", 403)
        try:
            body = read_body(request.environ, LOGIN_LIMIT, "the token form")
        except HuImagesError as exc:
            return self.refused(request, str(exc), exc.status)
        fields = parse_qs(body.decode("utf-8", "replace"), errors="replace")
        if not token_ok(self.config, (fields.get("token") or [""])[-1]):
            return self.refused(request, "Wrong token.", 403)
        expires = int(self.clock()) + SESSION_SECONDS
        response = self.redirect(request, "/")
        response.set_cookie(
            SESSION_COOKIE, session_cookie(self.config, expires), max_age=SESSION_SECONDS,
            path=request.environ.get("SCRIPT_NAME") or "/", httponly=True, samesite="strict",
            secure="https" in (request.scheme, request.environ.get("HTTP_X_FORWARDED_PROTO")),
        )
        return response

    # -- uploading -----------------------------------------------------------

    def upload(self, request: Request) -> Response:
        """Only for those ``allowed`` (checked before the body is read); POST-redirect-GET."""
        if not same_origin(request):
            return self.index(request, "This form only accepts posts from its own page.", 403)
        if request.content_length is None:
            return self.index(request, "The upload needs a Content-Length.", 411)
        name = ""
        try:
            data, fields = read_form(request.environ, self.config.max_upload_bytes, strict=False)
            if data is None:
                return self.index(request, "Choose a JPEG file to upload.", 400)
            if not data:
                return self.index(request, "The chosen file is empty.", 400)
            metadata = upload_metadata({
                "title": fields.get("title", "").strip(), "filename": fields.get("filename", "")})
            name = f"{metadata['filename']}: "
            imageid = self.store.save(data, **metadata).imageid
        except HuImagesError as exc:
            if isinstance(exc, BackendUnavailable):
                raise
            page = self.index(request, f"{name}{exc}", exc.status)
            if exc.status == 503:  # a busy node (admission.py): when to come back
                page.headers["Retry-After"] = RETRY_AFTER
            return page
        return self.redirect(request, f"/{imageid}")

    # -- building blocks -----------------------------------------------------

    def page(self, title: str, body: str, status: int = 200) -> Response:
        document = (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)} \u2013 huImages</title><style>{STYLE}</style></head><body>"
            '<header><h1>huImages</h1><a href="./">recent</a><a href="random">random</a></header>'
            f"<main><h2>{_e(title)}</h2>{body}</main></body></html>"
        )
        response = Response(status=status, content_type="text/html", charset="utf-8")
        response.text = encodable(document)
        response.cache_control = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
        return response

    def redirect(self, request: Request, where: str, status: int = 303) -> Response:
        response = Response(status=status)
        response.location = request.environ.get("SCRIPT_NAME", "") + where
        response.cache_control = "no-store"
        return response

    def not_allowed(self, allow: str) -> Response:
        response = self.page("Method not allowed", "<p>Use the links and the form.</p>", 405)
        response.headers["Allow"] = allow
        return response

    @staticmethod
    def _form() -> str:
        return (
            '<form id="upload" method="post" action="upload" enctype="multipart/form-data">'
            '<label>Image <input type="file" name="file" required accept="image/jpeg,'
            'image/png,image/webp,image/avif,image/heic,image/heif,image/gif,.heic,.heif">'
            "</label>"
            f'<label>Title <input type="text" name="title" maxlength="{TEXT_LIMIT}"></label>'
            '<button type="submit">Upload</button></form>'
        )

    def _original(self, imageid: str, ext: str) -> str:
        """The link to ``o`` (signed when a secret is set), or why there is none."""
        try:
            size = self.store.sizes.parse("o")
        except HuImagesError as exc:
            return f'<span class="note">{_e(exc)}</span>'
        url = self.store.links.url_for(imageid, size, ext, base_url=_RELATIVE_ROOT)
        return f'<a id="original" href="{_e(url)}">{imageid}.{ext}</a>'

    def _thumb(self, imageid: str) -> str:
        doc = self.store.catalog.get(imageid)
        title = newest_title(doc)
        image = self._tag(imageid, THUMB_SIZE, doc=doc, loading="lazy", placeholder=True)
        return (
            f'<li><a class="thumb" href="{_e(imageid)}" title="{_e(title)}">{image}'
            f"<span>{_e(title or imageid)}</span></a></li>"
        )

    def _tag(self, imageid: str, size: str, **options: Any) -> str:
        """``scaled_tag`` on relative URLs; a text link if the size is not allowed here."""
        try:
            return self.store.scaled_tag(
                imageid, size, srcset=True, base_url=_RELATIVE_ROOT, **options
            )
        except HuImagesError as exc:
            if isinstance(exc, BackendUnavailable):
                raise
            return f'<span class="note">({_e(exc)})</span>'

    @staticmethod
    def _link(imageid: str | None, label: str, rel: str) -> str:
        if imageid is None:
            return f'<span class="note">{_e(label)}</span>'
        return f'<a id="{rel}" rel="{rel}" href="{_e(imageid)}">{_e(label)}</a>'

    @staticmethod
    def _error(message: str) -> str:
        return f'<p class="error" role="alert">{_e(message)}</p>' if message else ""
