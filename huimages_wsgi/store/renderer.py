"""Making a missing variant: ``Renderer.variant`` puts it into the cache, once.

The miss path, end to end: check that the size and format go together, take
a place in the admission line (admission.py), read the catalog document, take
a render slot, then inside the cache's single-flight lock render from
the smallest upload-time preview that has enough pixels (previews.py), or
from the original, with the engine (engine.py). ``o`` is the original's
bytes, checked to still be an image.

Only an original that does not decode is evidence against the image: it is
marked broken in the catalog (never deleted; broken.py). An original over a
limit of this configuration is a 422 that leaves the image alone. A preview
that fails is a lost shortcut (the original is used), and a failure to write
the cache is the server's fault (``WriteFailed``, a 503): neither ever marks
the image.
"""

from __future__ import annotations

import logging
from typing import BinaryIO

from ..cache.admission import RenderSlots
from ..cache.directory import Cache, CachedFile
from ..core.errors import (
    ImageBroken,
    ImageNotFound,
    ImageTooLarge,
    InvalidImage,
    LimitExceeded,
    WriteFailed,
)
from ..core.formats import check_variant, ext_for_type, wrong_original_ext
from ..core.ids import validate_id
from ..core.previews import choose_preview, recorded_previews
from ..core.sizes import Size
from ..imaging.engine import ImageEngine
from ..storage import BlobNotFound, BlobStore, Catalog, Doc, is_live, timestamp
from ..storage.base import GuardedReader, broken_mark, source_dimensions

log = logging.getLogger("huimages_wsgi")


class Renderer:
    """Renders variants of one store's images into its cache."""

    def __init__(self, catalog: Catalog, blobs: BlobStore, engine: ImageEngine, cache: Cache):
        self.catalog, self.blobs, self.engine, self.cache = catalog, blobs, engine, cache

    def variant(
        self, imageid: str, size: Size, ext: str = "jpeg", admission: RenderSlots | None = None
    ) -> CachedFile:
        """The cached file for one variant, generated once if missing.

        With ``admission``, the requests of this process for one variant send
        one of them on (the others share its answer), which takes a place in
        the line (a 503 at once if it is full, before the catalog is asked),
        reads the catalog, then waits for a render slot (before the
        single-flight lock, so a wait for a slot never holds that lock); a
        render that will decode the whole original counts towards this
        process's share.
        """
        check_variant(size, ext)
        cached = self.cache.lookup(size.name, validate_id(imageid), ext)
        if cached is not None:
            return cached
        if admission is None:
            return self.produce(imageid, size, ext, self.live_doc(imageid))
        with self.cache.first_in_process(size.name, imageid, ext) as cached:
            if cached is not None:
                return cached  # made meanwhile by another request
            with admission.place():
                doc = self.live_doc(imageid)
                with admission.slot(full_decode=self.decodes_original(doc, size)):
                    return self.produce(imageid, size, ext, doc)

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

    def produce(self, imageid: str, size: Size, ext: str, doc: Doc) -> CachedFile:
        """Make the variant in the cache's single-flight lock (no admission)."""
        try:
            return self.cache.produce(
                size.name, imageid, ext, lambda out: self.write(imageid, size, ext, out, doc)
            )
        except OSError as exc:  # a full or failing cache disk: the image is fine
            raise WriteFailed(f"cannot write {size.name}/{imageid}.{ext}: {exc}") from exc

    def write(
        self, imageid: str, size: Size, ext: str, out: BinaryIO, doc: Doc | None = None
    ) -> None:
        """Only an original that does not decode is marked broken (never deleted):
        a limit of this configuration is a 422 that leaves the image alone, and
        a failure to write ``out`` (WriteFailed from the engine, an OSError
        from the copy of ``o``, which ``variant`` turns into WriteFailed)
        passes through. ``o`` is served at the extension of what the bytes
        are; any other is a 404 naming the right URL."""
        if doc is not None and self.write_from_preview(imageid, size, ext, out, doc):
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
                    self.engine.render(source, size, out, ext)
            except ImageTooLarge as exc:
                raise LimitExceeded(
                    f"image {imageid} is over a limit of this server, left as it is: {exc}"
                ) from exc
            except InvalidImage as exc:
                self.mark_broken(imageid, str(exc))
                raise ImageBroken(f"image {imageid} cannot be decoded") from exc

    @staticmethod
    def decodes_original(doc: Doc, size: Size) -> bool:
        """Whether making ``size`` may decode the whole original: no preview serves it,
        or it is ``o`` (the check before the copy decodes any original but a JPEG).
        A preview that turns out to be unusable (logged by ``write_from_preview``)
        makes a render decode the original after all, under the slot it took."""
        if size.is_original:  # a copy, after a check that decodes all but most JPEGs
            return True
        return Renderer.preview_for(doc, size) is None

    @staticmethod
    def preview_for(doc: Doc, size: Size) -> tuple[str, tuple[int, int]] | None:
        """The smallest recorded preview with enough pixels for ``size`` (its name) and
        the original's upright size; None when only the original will do."""
        source = source_dimensions(doc)
        chosen = choose_preview(recorded_previews(doc), *source, size) if source else None
        return None if chosen is None else (chosen[0], source)

    def write_from_preview(
        self, imageid: str, size: Size, ext: str, out: BinaryIO, doc: Doc
    ) -> bool:
        """Render from the smallest preview with enough pixels; False to use the original.

        Dimensions come from the original's size in the document, never from
        the preview's. A preview that is missing or does not decode is only a
        lost shortcut: it is logged, and the original is used.
        """
        chosen = self.preview_for(doc, size)
        if chosen is None:
            return False
        name, source = chosen
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
