"""Image URLs: building them from an ID and a size, and parsing a request's path back.

``/<size>/<ID>.<ext>`` is the canonical form and ``/<size>/<ID>/<name>.<ext>``
the SEO form; both are pure functions of configuration and metadata here.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any
from urllib.parse import parse_qs, quote, unquote_to_bytes

from .errors import InvalidPath
from .formats import CONTENT_TYPES as VARIANT_TYPES
from .formats import SERVED_TYPES
from .ids import validate_id

_SLUG_DROP = re.compile(r"[^a-z0-9]+")
_SEO_NAME_RE = re.compile(r"[^\x00-\x20\x7f/\\]{1,200}")
#: A mount a redirect may keep: "" or "/a/b", segments of safe characters, none a dot segment.
_PLAIN_MOUNT = re.compile(r"(/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*")


class ImageRequest:
    """A parsed image URL: which variant (size text, not yet checked) of which image, in
    which format."""

    __slots__ = ("imageid", "size_text", "ext")

    def __init__(self, imageid: str, size_text: str, ext: str) -> None:
        self.imageid, self.size_text, self.ext = imageid, size_text, ext

    @classmethod
    def parse(cls, path: str) -> ImageRequest:
        """``/<size>/<ID>.<ext>`` or ``/<size>/<ID>/<name>.<ext>``; InvalidPath (404) or
        InvalidImageId (400) otherwise."""
        parts = path.split("/")
        if len(parts) not in (3, 4) or parts[0] != "":
            raise InvalidPath("not an image URL: use /<size>/<ID>.jpeg")
        stem, dot, ext = parts[-1].rpartition(".")
        if not dot or ext not in SERVED_TYPES:
            raise InvalidPath(f"unsupported extension: use one of {sorted(SERVED_TYPES)}")
        if ext not in VARIANT_TYPES and parts[1] != "o":  # .heic, .gif: originals only
            raise InvalidPath(f"unsupported extension: use one of {sorted(VARIANT_TYPES)}")
        if len(parts) == 3:
            imageid = stem
        else:
            imageid = parts[2]
            if not _SEO_NAME_RE.fullmatch(stem):
                raise InvalidPath("invalid name after the image ID")
        validate_id(imageid)
        return cls(imageid, parts[1], ext)


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


def slugify(title: str, max_length: int = 80) -> str:
    """ASCII, lower-case, dash-separated: safe in any URL and any webserver rewrite."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    slug = _SLUG_DROP.sub("-", ascii_title.lower()).strip("-")
    return slug[:max_length].rstrip("-")


def image_path(
    imageid: str, size_name: str, ext: str = "jpeg", title: str = "", signature: str = ""
) -> str:
    """``/<size>/<ID>.<ext>`` or, with a title, ``/<size>/<ID>/<slug>.<ext>``."""
    slug = slugify(title) if title else ""
    size_part = quote(size_name, safe="!")
    path = f"/{size_part}/{imageid}/{slug}.{ext}" if slug else f"/{size_part}/{imageid}.{ext}"
    return f"{path}?sig={signature}" if signature else path


def mounted_url(environ: dict[str, Any], path: str, target: str, prefix: str = "") -> str:
    """``target`` (a path below the image root, like ``path``, the one asked for) as the
    client addresses it, for a ``Location``: whatever the root is mounted under kept
    (what the client's URL has before ``path``, else SCRIPT_NAME and ``prefix``),
    the query string too. Only a plain path is ever kept as the mount (no ``//``, no
    dot segments), so the answer never points at another site."""
    mounts = []
    uri = environ.get("REQUEST_URI", "").split("?", 1)[0]
    if uri:
        asked = split_request_uri(uri, "")[1]
        if path and asked.endswith(path):
            mounts.append(asked[: -len(path)])
    mounts.append(environ.get("SCRIPT_NAME", "").rstrip("/") + prefix)
    base = next((mount for mount in mounts if _PLAIN_MOUNT.fullmatch(mount)), "")
    location = quote(base + target, safe="/!-._~")
    query = quote(environ.get("QUERY_STRING", ""), safe="=&;+%,:@/!$'()*~-._")
    return f"{location}?{query}" if query else location


def join_url(server_url: str, path: str) -> str:
    return server_url.rstrip("/") + path


def split_request_uri(request_uri: str, script_name: str) -> tuple[str, str]:
    """``(SCRIPT_NAME, PATH_INFO)`` recovered from ``REQUEST_URI``.

    For FastCGI fronts that leave PATH_INFO empty (Apache's mod_proxy_fcgi,
    lighttpd's 404 handler). SCRIPT_NAME is kept only when it is a proper
    path prefix; otherwise (the error handler's URL, or the whole path) the
    app is really mounted at the root. WSGI strings are latin-1 decoded
    bytes (PEP 3333), so %XX escapes are decoded to bytes and mapped back
    one to one rather than assumed to be UTF-8.
    """
    raw = request_uri.split("?", 1)[0]
    if not raw.startswith("/") and "://" in raw[:16]:  # absolute form: drop scheme, authority
        authority_and_path = raw.partition("://")[2]
        slash = authority_and_path.find("/")
        raw = authority_and_path[slash:] if slash >= 0 else "/"
    path = unquote_to_bytes(raw.encode("latin-1", "replace")).decode("latin-1")
    script = script_name.rstrip("/")
    if script and path.startswith(script + "/"):
        return script, path[len(script) :]
    return "", path
