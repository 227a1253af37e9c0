"""Building image URLs, a pure function of configuration and metadata."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote, unquote_to_bytes

_SLUG_DROP = re.compile(r"[^a-z0-9]+")


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
