"""Building image URLs, a pure function of configuration and metadata."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

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
