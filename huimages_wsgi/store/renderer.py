"""Making a missing variant: ``Renderer.variant`` puts it into the cache, once.

The miss path, end to end: check that the size and format go together,
refuse at once if the admission queue is full (admission.py), read the
catalog document, choose the preview, then inside the cache's single-flight
lock look once more, take a render slot and render from the smallest
upload-time preview that has enough pixels (previews.py), or from the
original, with the engine (engine.py). ``o`` is the original's bytes,
checked to still be an image.

Only an original that does not decode is evidence against the image: it is
marked broken in the catalog (never deleted; broken.py). An original over a
limit of this configuration is a 422 that leaves the image alone. A preview
that fails is a lost shortcut (the original is used), and a failure to write
the cache is the server's fault (``WriteFailed``, a 503): neither ever marks
the image.
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager, nullcontext
from typing import BinaryIO

from ..cache.admission import LARGE_DECODE, Admission
from ..cache.directory import Cache, CachedFile
from ..core.errors import (
    ImageBroken,
    ImageNotFound,
    ImageTooLarge,
    InvalidImage,
    LimitExceeded,
    Moved,
    WriteFailed,
)
from ..core.formats import check_variant, ext_for_type, wrong_original_ext
from ..core.geometry import decoded_pixels
from ..core.ids import validate_id
from ..core.observe import rendered
from ..core.previews import choose_preview, recorded_previews
from ..core.sizes import CROP, Size
from ..core.urls import image_path
from ..imaging.engine import ImageEngine
from ..storage import BlobNotFound, BlobStore, Catalog, Doc, is_live, timestamp
from ..storage.base import GuardedReader, broken_mark, source_dimensions
from .metadata import focus_point, written_at

log = logging.getLogger("huimages_wsgi")


class Renderer:
    """Renders variants of one store's images into its cache."""

    def __init__(self, catalog: Catalog, blobs: BlobStore, engine: ImageEngine, cache: Cache,
                 auto_focus: bool = True):
        self.catalog, self.blobs, self.engine, self.cache = catalog, blobs, engine, cache
        self.auto_focus = auto_focus  # crops follow a computed focus_auto (summary.py)

    def variant(
        self, imageid: str, size: Size, ext: str = "jpeg", admission: Admission | None = None
    ) -> CachedFile:
        """The cached file for one variant, made once if missing.

        The caller has looked the variant up and missed (or wants it made if
        missing). One plan per miss: the format is checked, the catalog read
        once, the preview chosen once; then ``Cache.produce`` looks it up once
        more in the node's single-flight lock and, with ``admission``, holds
        a render slot while writing (a 503 when the node expects to be busy
        too long, before the catalog is asked when it is clear already;
        never for a variant another request is making: this one will wait
        for it in the lock, holding no slot).
        """
        check_variant(size, ext)
        validate_id(imageid)
        if admission is not None and not self.cache.being_made(size.name, imageid, ext):
            admission.check_room()
        doc = self.live_doc(imageid)
        if size.is_original:
            self.check_original_ext(imageid, ext, doc)
        preview = None if size.is_original else self.preview_for(doc, size)
        large = preview is None and self.decodes_large(doc, size)

        def admitted() -> AbstractContextManager[object]:
            return nullcontext() if admission is None else admission.render(large)

        focus = focus_point(doc, self.auto_focus) if size.kind == CROP else None
        try:
            return self.cache.produce(
                size.name, imageid, ext,
                lambda out: self.write(imageid, size, ext, out, preview, focus), admitted,
                mtime=self.last_modified(doc, size))
        except OSError as exc:  # a full or failing cache disk: the image is fine
            raise WriteFailed(f"cannot write {size.name}/{imageid}.{ext}: {exc}") from exc

    @staticmethod
    def last_modified(doc: Doc, size: Size | None = None) -> float | None:
        """A variant's mtime, and so its Last-Modified: the image's upload time from the
        catalog (for a crop, the last change of its focus if later; never later than
        now), the same on every node that renders it; None (the time of writing) for
        a document without one."""
        made = written_at(doc.get("ctime"))
        if made is not None and size is not None and size.kind == CROP:
            made = max(made, written_at(doc.get("focus_time")) or made)
        return None if made is None else min(made, float(int(time.time())))

    def check_original_ext(self, imageid: str, ext: str, doc: Doc | None = None) -> None:
        """``o/<ID>.<ext>`` at another extension than its type's: a 301 there, as huImages
        served ``o/`` at any (it only ever wrote ``.jpeg``); 404 for an unknown image."""
        doc = doc if doc is not None else self.live_doc(imageid)
        actual = ext_for_type(self.original_type(imageid, doc))
        if ext != actual:
            hint = str(wrong_original_ext(imageid, ext, actual))
            raise Moved(hint, image_path(imageid, "o", actual))

    def original_type(self, imageid: str, doc: Doc) -> str:
        """The original's content type; for a document huImages wrote (it kept none),
        read from the bytes once and recorded."""
        known = doc.get("contenttype")
        if isinstance(known, str) and known:
            return known
        try:
            with self.blobs.open(imageid) as handle:
                found = self.engine.check_stored(GuardedReader(handle, imageid).read())
        except (InvalidImage, ImageTooLarge):
            return "image/jpeg"  # as huImages served it; rendering it marks it broken
        self.catalog.update(imageid, lambda stored: stored.setdefault("contenttype", found))
        doc["contenttype"] = found
        return found

    def live_doc(self, imageid: str) -> Doc:
        """The catalog document of an image that may be rendered; 404 if it is unknown,
        deleted or marked broken."""
        doc = self.catalog.get(imageid)
        if not is_live(doc):
            raise ImageNotFound(f"no image {imageid}")
        mark = broken_mark(doc)
        if mark is not None:
            raise ImageBroken(
                f"image {imageid} is marked broken ({mark['reason']}); "
                f"'huimages check {imageid}' tests it again"
            )
        return doc

    def write(
        self, imageid: str, size: Size, ext: str, out: BinaryIO,
        preview: tuple[str, tuple[int, int]] | None = None,
        focus: tuple[float, float] | None = None,
    ) -> None:
        """Only an original that does not decode is marked broken (never deleted):
        a limit of this configuration is a 422 that leaves the image alone, and
        a failure to write ``out`` (WriteFailed from the engine, an OSError
        from the copy of ``o``, which ``variant`` turns into WriteFailed)
        passes through. ``o`` is served at the extension of what the bytes
        are; any other is a 404 naming the right URL."""
        started = time.perf_counter()
        if preview is not None and self.write_from_preview(imageid, size, ext, out, preview,
                                                           focus):
            rendered("preview", ext, time.perf_counter() - started)
            return
        with self.blobs.open(imageid) as handle:
            source = GuardedReader(handle, f"the original of {imageid}")
            try:
                if size.is_original:
                    data = source.read()
                    actual = ext_for_type(self.engine.check_stored(data))
                    if actual != ext:
                        raise wrong_original_ext(imageid, ext, actual)
                    out.write(data)
                else:
                    self.engine.render(source, size, out, ext, focus=focus)
                    rendered("original", ext, time.perf_counter() - started)
            except ImageTooLarge as exc:
                raise LimitExceeded(
                    f"image {imageid} is over a limit of this server, left as it is: {exc}"
                ) from exc
            except InvalidImage as exc:
                self.mark_broken(imageid, str(exc))
                raise ImageBroken(f"image {imageid} cannot be decoded") from exc

    @staticmethod
    def decodes_large(doc: Doc, size: Size) -> bool:
        """Whether rendering ``size`` from the original decodes a large image (by the
        recorded size; one the document does not know counts as large)."""
        source = source_dimensions(doc)
        if source is None:
            return True
        jpeg = str(doc.get("contenttype") or "image/jpeg").startswith("image/jpeg")
        return decoded_pixels(*source, size, dct_scaled=jpeg) > LARGE_DECODE

    @staticmethod
    def preview_for(doc: Doc, size: Size) -> tuple[str, tuple[int, int]] | None:
        """The smallest recorded preview with enough pixels for ``size`` (its name) and
        the original's upright size; None when only the original will do."""
        source = source_dimensions(doc)
        chosen = choose_preview(recorded_previews(doc), *source, size) if source else None
        return None if chosen is None else (chosen[0], source)

    def write_from_preview(
        self, imageid: str, size: Size, ext: str, out: BinaryIO,
        preview: tuple[str, tuple[int, int]], focus: tuple[float, float] | None = None,
    ) -> bool:
        """Render from ``preview`` (its name, the original's upright size); False to
        use the original.

        Dimensions come from the original's size in the document, never from
        the preview's. A preview that is missing or does not decode is only a
        lost shortcut: it is logged, and the original is used (under the
        render slot this miss took for a preview).
        """
        name, source = preview
        try:
            with self.blobs.open_derived(imageid, name) as preview:
                self.engine.render(preview, size, out, ext, original_size=source, focus=focus)
            return True
        except (BlobNotFound, InvalidImage, ImageTooLarge) as exc:
            log.warning("preview %s of %s not usable, rendering from the original: %s",
                        name, imageid, exc)
            out.seek(0)
            out.truncate()
            return False

    def mark_broken(self, imageid: str, reason: str) -> None:
        """Mark an original that does not decode: ``broken: {reason, time}``.

        Never ``deleted`` (huImages did that, and a limit then hid healthy
        images for good): the image stays in the catalog, its variants answer
        404 without decoding again, and ``huimages check`` re-tests it
        (broken.py). A re-upload of the same bytes clears the mark too.
        """
        log.error("marking image %s broken: %s", imageid, reason)

        def change(doc: Doc) -> None:
            if doc:  # never create a document for an ID the catalog does not know
                doc["broken"] = {"reason": reason[:200], "time": timestamp()}

        self.catalog.update(imageid, change)
