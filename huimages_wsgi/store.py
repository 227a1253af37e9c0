"""ImageStore: the service object every front (client API, WSGI, CLI) uses.

It owns one configuration and the backends built from it, so an
application can hold two stores at once. Method names and signatures follow
the original huImages module-level API.
"""

from __future__ import annotations

import datetime
import html
import io
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .cache import Cache
from .config import Config
from .engine import ImageEngine
from .errors import ImageNotFound, ImageTooLarge, InvalidImage, InvalidSize, SizeNotAllowed
from .geometry import scaled_dimensions as _geometry_dimensions
from .ids import compute_id, validate_id
from .signing import sign
from .sizes import Size, parse_size
from .storage import BlobStore, Catalog, Doc, is_live, open_blob_store, open_catalog, timestamp
from .urls import image_path, join_url

log = logging.getLogger("huimages_wsgi")


def _merge(
    doc: Doc, *, when: str, title: str, references: Mapping[str, Any] | None, typ: str
) -> None:
    """Accumulate metadata the way the original did: nothing is ever dropped."""
    doc.setdefault("ctime", when)
    doc["mtime"] = when
    if typ and typ not in doc.setdefault("types", []):
        doc["types"].append(typ)
    for key, value in (references or {}).items():
        values = doc.setdefault("references", {}).setdefault(str(key), [])
        if value not in values:
            values.append(value)
    if title and title not in doc.setdefault("title", []):
        doc["title"].append(title)


def _as_timestamp(value: datetime.datetime | str | None) -> str:
    if value is None:
        return timestamp()
    if isinstance(value, datetime.datetime):
        return timestamp(value)
    return str(value)


def newest_title(doc: Doc | None) -> str:
    titles = (doc or {}).get("title") or []
    if isinstance(titles, str):
        return titles
    return str(titles[-1]) if titles else ""


class ImageStore:
    """Upload, describe, locate and render images for one configuration."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        catalog: Catalog | None = None,
        blobs: BlobStore | None = None,
        engine: ImageEngine | None = None,
    ) -> None:
        self.config = config or Config.from_env()
        self.catalog = catalog or open_catalog(self.config)
        self.blobs = blobs or open_blob_store(self.config, self.catalog)
        self.engine = engine or ImageEngine(self.config.jpeg_quality, self.config.max_pixels)
        self.cache = Cache(self.config.cache_root, self.config.lock_timeout)

    # -- sizes ---------------------------------------------------------------

    def parse_size(self, text: str) -> Size:
        """Parse and apply the configured limits (box size, allow-list)."""
        size = parse_size(text, self.config.presets)
        allowed = self.config.allowed_sizes
        if allowed is not None and size.name not in allowed and size.spec not in allowed:
            raise SizeNotAllowed(f"size {size.name!r} is not in the list of allowed sizes")
        limit = self.config.max_dimension
        if size.width > limit or size.height > limit:
            raise InvalidSize(f"size {size.name!r} exceeds the maximum of {limit} pixels per side")
        return size

    # -- writing -------------------------------------------------------------

    def save_image(
        self,
        imagedata: bytes,
        contenttype: str | None = None,
        timestamp: datetime.datetime | str | None = None,
        title: str = "",
        references: Mapping[str, Any] | None = None,
        filename: str = "image.jpeg",
        typ: str = "",
    ) -> str:
        """Store an original and return its ID; the same bytes give the same ID.

        ``contenttype`` is accepted for compatibility; the stored type is the
        one detected from the bytes, which are validated completely first.
        """
        del contenttype
        if not isinstance(imagedata, bytes | bytearray | memoryview):
            raise InvalidImage("image data must be bytes")
        imagedata = bytes(imagedata)
        if len(imagedata) > self.config.max_upload_bytes:
            raise ImageTooLarge(
                f"upload is {len(imagedata)} bytes; the limit is {self.config.max_upload_bytes}"
            )
        info = self.engine.inspect(imagedata)
        imageid = compute_id(imagedata)
        # Original first: the catalog must never point at bytes that are not stored.
        self.blobs.put(imageid, imagedata, info.content_type, info.width, info.height)
        when = _as_timestamp(timestamp)

        def change(doc: Doc) -> None:
            _merge(doc, when=when, title=title, references=references, typ=typ)
            doc.update(
                width=info.width,
                height=info.height,
                length=len(imagedata),
                contenttype=info.content_type,
                deleted=False,
            )
            doc.setdefault("filename", filename)
            doc.pop("broken", None)

        self.catalog.update(imageid, change)
        return imageid

    def update_metadata(
        self,
        imageid: str,
        title: str = "",
        references: Mapping[str, Any] | None = None,
        typ: str = "",
    ) -> Doc:
        """Add titles, references or a type to an existing image."""
        self.get_imagedoc(imageid)
        return self.catalog.update(
            imageid,
            lambda doc: _merge(doc, when=timestamp(), title=title, references=references, typ=typ),
        )

    def set_title(self, imageid: str, newtitle: str) -> Doc:
        return self.update_metadata(imageid, title=newtitle)

    def delete_image(self, imageid: str) -> None:
        """Mark deleted, drop the original and this node's cached variants."""
        self.get_imagedoc(imageid)
        self.catalog.update(imageid, lambda doc: doc.update(deleted=True, mtime=timestamp()))
        self.blobs.delete(imageid)
        self.purge(imageid)

    def purge(self, imageid: str) -> int:
        return self.cache.purge(validate_id(imageid))

    # -- reading -------------------------------------------------------------

    def get_imagedoc(self, imageid: str) -> Doc:
        doc = self.catalog.get(validate_id(imageid))
        if not is_live(doc):
            raise ImageNotFound(f"no image {imageid}")
        return doc  # type: ignore[return-value]

    def get_length(self, imageid: str) -> int:
        doc = self.get_imagedoc(imageid)
        if "length" in doc:
            return int(doc["length"])
        attachments = doc.get("_attachments") or {}
        for attachment in attachments.values():
            return int(attachment["length"])
        raise ImageNotFound(f"no length known for {imageid}")

    def scaled_dimensions(
        self, imageid: str, size: str = "square"
    ) -> tuple[int | None, int | None]:
        parsed = parse_size(size, self.config.presets)
        if parsed.kind == "crop":
            return parsed.width, parsed.height
        doc = self.catalog.get(validate_id(imageid))
        if not is_live(doc) or not doc.get("width") or not doc.get("height"):
            return None, None
        return _geometry_dimensions(int(doc["width"]), int(doc["height"]), parsed)

    def scaled_imagedata(self, imageid: str, size: str = "square") -> bytes:
        return self.variant(imageid, self.parse_size(size)).read_bytes()

    # -- URLs ----------------------------------------------------------------

    def url_for(self, imageid: str, size: Size, ext: str = "jpeg", title: str = "") -> str:
        """Signed automatically when a secret is configured."""
        secret = self.config.secret
        signature = sign(secret, size.name, imageid) if secret else ""
        path = image_path(imageid, size.name, ext, title, signature)
        return join_url(self.config.server_url, path)

    def imageurl(self, imageid: str, size: str = "o") -> str:
        validate_id(imageid)
        return self.url_for(imageid, self.parse_size(size))

    def scaled_imageurl(self, imageid: str, size: str = "150x150") -> str:
        """Presets resolve to their box, so ``square`` and ``75x75!`` share a cache file."""
        validate_id(imageid)
        parsed = self.parse_size(size)
        canonical = parse_size(parsed.spec, self.config.presets)
        return self.url_for(imageid, canonical, title=newest_title(self.catalog.get(imageid)))

    def scaled_tag(self, imageid: str, size: str = "square", *args: str, **attrs: str) -> str:
        """An ``<img>`` with width, height and alt, every value HTML-escaped."""
        width, height = self.scaled_dimensions(imageid, size)
        doc = self.catalog.get(validate_id(imageid))
        alt = " ".join(filter(None, [newest_title(doc), self.config.alt_addition]))
        parts = [f'<img src="{html.escape(self.scaled_imageurl(imageid, size))}"']
        if width and height:
            parts.append(f'width="{width}" height="{height}"')
        attrs.setdefault("alt", alt)
        parts.extend(html.escape(arg) for arg in args)
        parts.extend(f'{html.escape(k)}="{html.escape(str(v))}"' for k, v in attrs.items())
        parts.append("/>")
        return " ".join(parts)

    # -- browsing ------------------------------------------------------------

    def get_random_imageid(self) -> str | None:
        return self.catalog.random_id()

    def get_next_imageid(self, imageid: str) -> str | None:
        return self.catalog.next_id(validate_id(imageid))

    def get_previous_imageid(self, imageid: str) -> str | None:
        return self.catalog.previous_id(validate_id(imageid))

    # -- rendering -----------------------------------------------------------

    def variant(self, imageid: str, size: Size, ext: str = "jpeg") -> Path:
        """The cached file for one variant, generated once if missing."""
        path = self.cache.path(size.name, validate_id(imageid), ext)
        if path.exists():
            return path
        doc = self.catalog.get(imageid)
        if not is_live(doc):
            raise ImageNotFound(f"no image {imageid}")
        self.cache.produce(path, lambda out: self._write_variant(imageid, size, ext, out))
        return path

    def _write_variant(self, imageid: str, size: Size, ext: str, out: io.BufferedWriter) -> None:
        with self.blobs.open(imageid) as source:
            if size.is_original:
                shutil.copyfileobj(source, out, 1 << 20)
                return
            try:
                self.engine.render(source, size, out, ext)
            except (InvalidImage, ImageTooLarge) as exc:
                self.mark_broken(imageid, str(exc))
                raise ImageNotFound(f"image {imageid} cannot be decoded") from exc

    def mark_broken(self, imageid: str, reason: str) -> None:
        """Like the original: a broken original is flagged deleted, then answered 404."""
        log.error("marking image %s broken: %s", imageid, reason)

        def change(doc: Doc) -> None:
            doc.update(deleted=True, broken=reason[:200], mtime=timestamp())

        self.catalog.update(imageid, change)
