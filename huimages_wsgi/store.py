"""ImageStore: the service object every front (client API, WSGI, CLI) uses.

It owns one configuration and the backends built from it, so an
application can hold two stores at once. Method names and signatures follow
the original huImages module-level API.
"""

from __future__ import annotations

import datetime
import io
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .batch import FAILED, tally
from .cache import Cache
from .config import Config
from .engine import ImageEngine, Preview
from .errors import (
    HuImagesError,
    ImageNotFound,
    ImageTooLarge,
    InvalidImage,
    InvalidSize,
    SizeNotAllowed,
    WriteFailed,
)
from .formats import UNAVAILABLE, check_variant, output_format
from .geometry import high_density_size
from .geometry import scaled_dimensions as _geometry_dimensions
from .ids import compute_id, validate_id
from .previews import choose_preview, planned_previews, recorded_previews
from .signing import sign
from .sizes import CROP, Size, parse_size
from .storage import (
    BlobNotFound,
    BlobStore,
    Catalog,
    Doc,
    is_live,
    open_blob_store,
    open_catalog,
    timestamp,
)
from .storage.base import GuardedReader, recorded_size
from .tags import img_tag, picture_tag
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


def as_timestamp(value: datetime.datetime | str | None) -> str:
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

    def checked_upload(self, imagedata: Any) -> bytes:
        """The bytes of an upload, refused before any parsing when not bytes or too big."""
        if not isinstance(imagedata, bytes | bytearray | memoryview):
            raise InvalidImage("image data must be bytes")
        limit = self.config.max_upload_bytes
        if len(imagedata) > limit:
            raise ImageTooLarge(f"upload is {len(imagedata)} bytes; the limit is {limit}")
        return bytes(imagedata)

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

        The decode that validates the bytes also makes the previews
        (previews.py), stored next to the original and listed in the document.
        A repeated upload makes them again: the same bytes give the same
        previews, and a lost one is replaced on the way.
        """
        del contenttype
        imagedata = self.checked_upload(imagedata)
        info = self.engine.inspect(imagedata, previews=True)
        imageid = compute_id(imagedata)
        # Blobs first: the catalog must never point at bytes that are not stored.
        self.blobs.put(imageid, imagedata, info.content_type, info.width, info.height)
        previews = self._store_previews(imageid, info.previews)
        when = as_timestamp(timestamp)

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
            _record_previews(doc, previews)

        self.catalog.update(imageid, change)
        return imageid

    def _store_previews(self, imageid: str, previews: Sequence[Preview]) -> dict[str, list[int]]:
        """Put each preview in the blob store; the ones it kept, for the document."""
        return {
            preview.name: [preview.width, preview.height]
            for preview in previews
            if self.blobs.put_derived(imageid, preview.name, preview.data)
        }

    def ensure_previews(self, imageid: str) -> str:
        """Make the previews an image lacks (one uploaded before they existed).

        Idempotent: returns ``"made"``, ``"already there"``, ``"not needed"``
        (an original too small for any), or ``"not supported"`` (a blob store
        that keeps none). The original is read and validated like an upload;
        one that no longer decodes raises InvalidImage and is left as it is.
        """
        doc = self.get_imagedoc(imageid)
        source = _source_dimensions(doc)
        if source is not None:
            wanted = {name for name, _, _ in planned_previews(*source)}
            if not wanted:
                return NOT_NEEDED
            if wanted <= set(recorded_previews(doc)):
                return ALREADY_THERE
        with self.blobs.open(imageid) as handle:
            data = GuardedReader(handle, f"the original of {imageid}").read()
        info = self.engine.inspect(data, previews=True)
        if not info.previews:
            return NOT_NEEDED
        previews = self._store_previews(imageid, info.previews)
        if not previews:
            return NOT_SUPPORTED

        def change(doc: Doc) -> None:
            doc.update(width=info.width, height=info.height)
            _record_previews(doc, previews)

        self.catalog.update(imageid, change)
        return MADE

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

    def delete_image(self, imageid: str) -> int:
        """Drop the original, then mark the image deleted, then this node's variants.

        Returns the number of this node's cached files removed; every other
        node's follower (follower.py) purges its own when it sees the mark.

        The bytes go first: should that fail, the image is still live and
        deleting again does it all. Once the mark is set, the blob store is
        never touched again for this ID: a re-upload of the same bytes may be
        writing it. Deleting an image that is already deleted only purges
        this node's cache (finishing a purge that failed) and answers
        ImageNotFound.
        """
        doc = self.catalog.get(validate_id(imageid))
        if not is_live(doc):
            if doc:
                self.purge(imageid)
            raise ImageNotFound(f"no image {imageid}")
        self.blobs.delete(imageid)
        self.catalog.update(imageid, lambda doc: doc.update(deleted=True, mtime=timestamp()))
        return self.purge(imageid)

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
        """The size a variant will have, or (None, None) for an image not there.

        The ID and the size are checked as a request for the variant checks
        them (the configured limits and allow-list included), so this never
        predicts a variant the server refuses. A crop is its box: no lookup.
        """
        validate_id(imageid)
        parsed = self.parse_size(size)
        doc = None if parsed.kind == CROP else self.catalog.get(imageid)
        return self._tag_dimensions(doc, parsed)

    def scaled_imagedata(self, imageid: str, size: str = "square", ext: str = "jpeg") -> bytes:
        return self.variant(imageid, self.parse_size(size), ext).read_bytes()

    # -- URLs ----------------------------------------------------------------

    def url_for(
        self,
        imageid: str,
        size: Size,
        ext: str = "jpeg",
        title: str = "",
        base_url: str | None = None,
    ) -> str:
        """Signed automatically when a secret is configured.

        ``base_url`` replaces the configured server URL, e.g. ``..`` for URLs
        relative to a page one level below the image root (the browse page).
        """
        secret = self.config.secret
        signature = sign(secret, size.name, imageid) if secret else ""
        path = image_path(imageid, size.name, ext, title, signature)
        return join_url(base_url or self.config.server_url, path)

    def imageurl(self, imageid: str, size: str = "o") -> str:
        validate_id(imageid)
        return self.url_for(imageid, self.parse_size(size))

    def canonical_size(self, size: str) -> Size:
        """Presets resolve to their box, so ``square`` and ``75x75!`` share a cache file."""
        return parse_size(self.parse_size(size).spec, self.config.presets)

    def scaled_imageurl(
        self, imageid: str, size: str = "150x150", ext: str = "jpeg", *, base_url: str | None = None
    ) -> str:
        validate_id(imageid)
        canonical = self.canonical_size(size)
        check_variant(canonical, ext)
        title = newest_title(self.catalog.get(imageid))
        return self.url_for(imageid, canonical, ext, title, base_url)

    def scaled_tag(
        self,
        imageid: str,
        size: str = "square",
        *args: str,
        formats: Sequence[str] = (),
        srcset: bool = False,
        base_url: str | None = None,
        doc: Doc | None = None,
        **attrs: str,
    ) -> str:
        """An ``<img>`` with width, height and alt, every value HTML-escaped.

        ``srcset=True`` adds a high-density candidate: the box doubled, capped
        at what the original can give (so ``1.5x`` for a photo only 1.5 times
        the box, and none for one smaller than the box). ``formats`` (e.g.
        ``("avif", "webp")``, best first) wraps the ``<img>`` in a ``<picture>``
        with one ``<source>`` per format; the ``<img>`` stays JPEG, which every
        browser decodes. One catalog read, whatever the options, or none when
        the caller already holds the image's ``doc``.
        """
        validate_id(imageid)
        if doc is None:
            doc = self.catalog.get(imageid)
        title = newest_title(doc)
        one_x = self.canonical_size(size)
        width, height = self._tag_dimensions(doc, one_x)
        sizes = [(one_x, 1.0)]
        if srcset and width and height:
            two_x = self._high_density(doc, one_x)
            if two_x is not None:
                sizes.append((two_x, self._tag_dimensions(doc, two_x)[0] / width))

        def candidates(ext: str) -> list[tuple[str, float]]:
            check_variant(one_x, ext)
            return [
                (self.url_for(imageid, variant, ext, title, base_url), density)
                for variant, density in sizes
                if variant is one_x or _fits(variant, ext)
            ]

        attrs.setdefault("alt", " ".join(filter(None, [title, self.config.alt_addition])))
        img = img_tag(candidates("jpeg"), width, height, args, attrs)
        sources = [
            (output_format(ext).content_type, candidates(ext))
            for ext in formats
            if ext != "jpeg" and ext not in UNAVAILABLE  # a Pillow without AVIF offers none
        ]
        return picture_tag(sources, img) if formats else img

    def _tag_dimensions(self, doc: Doc | None, size: Size) -> tuple[int | None, int | None]:
        if size.kind == CROP:
            return size.width, size.height
        source = _source_dimensions(doc)
        return _geometry_dimensions(*source, size) if source else (None, None)

    def _high_density(self, doc: Doc | None, size: Size) -> Size | None:
        """The 2x size, if the original has the pixels and the configuration allows it."""
        source = _source_dimensions(doc)
        if source is None:
            return None
        bigger = high_density_size(*source, size, self.config.max_dimension)
        if bigger is None:
            return None
        try:
            return self.parse_size(bigger.name)  # honours HUIMAGES_ALLOWED_SIZES
        except HuImagesError:
            return None

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
        check_variant(size, ext)
        path = self.cache.path(size.name, validate_id(imageid), ext)
        if self.cache.finished(path) is not None:
            return path
        doc = self.catalog.get(imageid)
        if not is_live(doc):
            raise ImageNotFound(f"no image {imageid}")
        try:
            self.cache.produce(path, lambda out: self._write_variant(imageid, size, ext, out, doc))
        except OSError as exc:  # a full or failing cache disk: the image is fine
            raise WriteFailed(f"cannot write {size.name}/{imageid}.{ext}: {exc}") from exc
        return path

    def _write_variant(
        self, imageid: str, size: Size, ext: str, out: io.BufferedWriter, doc: Doc | None = None
    ) -> None:
        """Only an original that does not decode is marked broken: a failure to
        write ``out`` (WriteFailed from the engine, an OSError from the copy of
        ``o``, which ``variant`` turns into WriteFailed) passes through."""
        if doc is not None and self._write_from_preview(imageid, size, ext, out, doc):
            return
        with self.blobs.open(imageid) as handle:
            source = GuardedReader(handle, f"the original of {imageid}")
            try:
                if size.is_original:
                    data = source.read()
                    self.engine.check_stored(data)
                    out.write(data)
                else:
                    self.engine.render(source, size, out, ext)
            except (InvalidImage, ImageTooLarge) as exc:
                self.mark_broken(imageid, str(exc))
                raise ImageNotFound(f"image {imageid} cannot be decoded") from exc

    def _write_from_preview(
        self, imageid: str, size: Size, ext: str, out: io.BufferedWriter, doc: Doc
    ) -> bool:
        """Render from the smallest preview with enough pixels; False to use the original.

        Dimensions come from the original's size in the document, never from
        the preview's. A preview that is missing or does not decode is only a
        lost shortcut: it is logged, and the original is used.
        """
        source = _source_dimensions(doc)
        chosen = choose_preview(recorded_previews(doc), *source, size) if source else None
        if chosen is None:
            return False
        name = chosen[0]
        try:
            with self.blobs.open_derived(imageid, name) as preview:
                self.engine.render(preview, size, out, ext, original_size=source)
            return True
        except (BlobNotFound, InvalidImage, ImageTooLarge) as exc:
            log.warning("preview %s of %s not usable, rendering from the original: %s",
                        name, imageid, exc)
            out.seek(0)
            out.truncate()
            return False

    def mark_broken(self, imageid: str, reason: str) -> None:
        """Like the original: a broken original is flagged deleted, then answered 404."""
        log.error("marking image %s broken: %s", imageid, reason)

        def change(doc: Doc) -> None:
            doc.update(deleted=True, broken=reason[:200], mtime=timestamp())

        self.catalog.update(imageid, change)


MADE = "made"
ALREADY_THERE = "already there"
NOT_NEEDED = "not needed"
NOT_SUPPORTED = "not supported"
PREVIEW_OUTCOMES = (MADE, ALREADY_THERE, NOT_NEEDED, NOT_SUPPORTED, FAILED)


def backfill_previews(
    store: ImageStore,
    imageids: Iterable[str],
    on_step: Callable[[str, str], None] = lambda imageid, outcome: None,
) -> Counter[str]:
    """``ensure_previews`` for many images; safe to interrupt and run again."""
    return tally(imageids, store.ensure_previews, on_step, "making previews of")


def _record_previews(doc: Doc, previews: Mapping[str, list[int]]) -> None:
    """Merge into the document's ``previews`` (a concurrent writer's entries stay)."""
    if previews:
        recorded = doc.get("previews")
        doc["previews"] = {**(recorded if isinstance(recorded, dict) else {}), **previews}


def _source_dimensions(doc: Doc | None) -> tuple[int, int] | None:
    """The original's upright size as the catalog knows it; None if unknown or deleted."""
    size = recorded_size(doc)
    return size if is_live(doc) and size != (0, 0) else None


def _fits(size: Size, ext: str) -> bool:
    """Whether ``ext`` is offered at ``size`` (PNG stops at small boxes)."""
    try:
        check_variant(size, ext)
    except HuImagesError:
        return False
    return True
