"""ImageStore: the store itself, the service object every front uses.

It owns one configuration and the parts built from it (catalog, blob store,
engine, cache), so an application can hold two stores at once. It writes and
reads images and their metadata; the jobs around it live beside it: URLs and
tags in ``links.Links`` (``.links``), rendering in ``render.Renderer``
(``.renderer``), lookups in finding.py, preview backfill in backfill.py.
Method names and signatures follow the original huImages module-level API.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from ..cache.admission import LARGE_DECODE, Admission
from ..core.config import Config
from ..core.errors import HuImagesError, ImageNotFound
from ..core.ids import compute_id, validate_id
from ..core.observe import uploading
from ..core.previews import record_previews
from ..core.sizes import Size
from ..imaging.engine import ImageEngine, Preview
from ..imaging.summary import summarize_bytes
from ..storage import (
    BlobStore,
    Catalog,
    Doc,
    is_live,
    open_blob_store,
    open_catalog,
    timestamp,
)
from ..storage.disk import check_writable
from .basestore import BaseImageStore, Saved, checked_upload
from .links import file_name, seo_name
from .metadata import as_timestamp, merge_metadata
from .renderer import Renderer


class ImageStore(BaseImageStore):
    """Upload, describe, browse, render and delete images over one configuration's backends."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        catalog: Catalog | None = None,
        blobs: BlobStore | None = None,
        engine: ImageEngine | None = None,
    ) -> None:
        config = config or Config.from_env()
        super().__init__(config, catalog or open_catalog(config))
        self.blobs = blobs or open_blob_store(config, self.catalog)
        self.engine = engine or ImageEngine(
            config.jpeg_quality, config.max_pixels, background=config.background,
            max_scans=config.max_scans, max_decode_bytes=config.max_decode_bytes,
        )
        self.admission = Admission.from_config(config)  # misses and uploads take its slots

    @property
    def renderer(self) -> Renderer:
        """Rendering into this store's cache, over its current parts."""
        return Renderer(self.catalog, self.blobs, self.engine, self.cache,
                        self.config.auto_focus)

    # -- writing -------------------------------------------------------------

    def save(
        self,
        imagedata: bytes,
        timestamp: datetime.datetime | str | None = None,
        title: str = "",
        references: Mapping[str, Any] | None = None,
        filename: str = "image.jpeg",
        typ: str = "",
        tags: Sequence[str] = (),
    ) -> Saved:
        """``save_image`` that also says whether the image is new.

        The decode that validates the bytes also makes the previews
        (previews.py), stored next to the original and listed in the document.
        A repeated upload makes them again: the same bytes give the same
        previews, and a lost one is replaced on the way. The decode holds a
        render slot like a miss (``self.admission``, a 503 when busy).
        """
        imagedata = checked_upload(imagedata, self.config.max_upload_bytes)
        with uploading(len(imagedata)):
            return self._save(imagedata, timestamp, title, references, filename, typ, tags)

    def _save(
        self,
        imagedata: bytes,
        timestamp: datetime.datetime | str | None,
        title: str,
        references: Mapping[str, Any] | None,
        filename: str,
        typ: str,
        tags: Sequence[str] = (),
    ) -> Saved:
        info = self.engine.inspect(imagedata, previews=True, admit=self._admit)
        imageid = compute_id(imagedata)
        # Blobs first: the catalog must never point at bytes that are not stored.
        self.blobs.put(imageid, imagedata, info.content_type, info.width, info.height)
        previews = self.keep_previews(imageid, info.previews)
        summary = self.summary_fields(imagedata, info.previews)
        when = as_timestamp(timestamp)
        seen: list[bool] = []

        def change(doc: Doc) -> None:
            # Was the image live before? (The last call is the one the catalog kept;
            # a new CouchDB document arrives holding its "_id" alone.)
            held = {k: v for k, v in doc.items() if k not in ("_id", "_rev")}
            seen.append(is_live(held))
            doc.setdefault("filename", file_name(doc) or filename)
            if held:  # saved before (here or by huImages): its URLs keep their name
                doc.setdefault("seo_name", seo_name(doc))
            merge_metadata(doc, when=when, title=title, references=references, typ=typ,
                           tags=tags)
            doc.update(
                width=info.width,
                height=info.height,
                length=len(imagedata),
                contenttype=info.content_type,
                deleted=False,
            )
            doc.setdefault("seo_name", seo_name(doc))  # its URLs' name, for good (links.py)
            doc.pop("broken", None)
            doc.update(summary)
            if info.trailer:  # what follows a JPEG's image: kept, and said here
                doc["trailer"] = info.trailer
            else:
                doc.pop("trailer", None)
            record_previews(doc, previews)

        self.catalog.update(imageid, change)
        return Saved(imageid, new=not seen[-1])

    def summary_fields(self, data: bytes, previews: Sequence[Preview] = ()) -> Doc:
        """``color``, ``placeholder`` and (with HUIMAGES_AUTO_FOCUS) ``focus_auto`` for a
        document, from the smallest preview, else the original (imaging/summary.py)."""
        smallest = min(previews, key=lambda preview: preview.width, default=None)
        summary = summarize_bytes(smallest.data if smallest else data)
        if summary is None:  # too large to decode cheaply, without previews: none
            return {}
        fields: Doc = {"color": summary.colour, "placeholder": summary.placeholder}
        if self.config.auto_focus:
            fields["focus_auto"] = list(summary.focus)
        return fields

    def _admit(self, pixels: int) -> AbstractContextManager[object]:
        """A render slot for an upload decoding ``pixels`` (a decode slot too when large)."""
        admission = self.admission
        return nullcontext() if admission is None else admission.render(pixels > LARGE_DECODE)

    def keep_previews(self, imageid: str, previews: Sequence[Preview]) -> dict[str, list[int]]:
        """Put each preview in the blob store; the ones it kept, for the document."""
        return {
            preview.name: [preview.width, preview.height]
            for preview in previews
            if self.blobs.put_derived(imageid, preview.name, preview.data)
        }

    def update_metadata(
        self,
        imageid: str,
        title: str = "",
        references: Mapping[str, Any] | None = None,
        typ: str = "",
        *,
        timestamp: datetime.datetime | str | None = None,
        tags: Sequence[str] = (),
    ) -> Doc:
        """Add titles, references, a type or tags to an existing image; ``mtime`` becomes
        ``timestamp`` (now when None). Its URLs keep their name (``seo_name``)."""
        self.get_imagedoc(imageid)
        when = as_timestamp(timestamp)

        def change(doc: Doc) -> None:
            doc.setdefault("seo_name", seo_name(doc))  # before a first title arrives
            merge_metadata(doc, when=when, title=title, references=references, typ=typ,
                           tags=tags)

        return self.catalog.update(imageid, change)

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

    # -- rendering (renderer.py) -----------------------------------------------

    def scaled_imagedata(self, imageid: str, size: str = "150x150", ext: str = "jpeg") -> bytes:
        """The variant's bytes; ``o`` is the original's, whatever its type."""
        parsed = self.size_for(size)
        ext = self.links.served_ext(validate_id(imageid), parsed, ext)
        return self.variant_path(imageid, parsed, ext).read_bytes()

    def variant_path(self, imageid: str, size: Size, ext: str = "jpeg") -> Path:
        """The path of one variant's cached file, made once if missing (renderer.py)."""
        cached = self.cache.lookup(size.name, validate_id(imageid), ext)
        if cached is None:
            cached = self.renderer.variant(imageid, size, ext)
        return Path(cached.path)

    def mark_broken(self, imageid: str, reason: str) -> None:
        """Mark an original that does not decode (never deleted; see renderer.py, broken.py)."""
        self.renderer.mark_broken(imageid, reason)

    # -- operations ----------------------------------------------------------

    def check(self) -> dict[str, dict[str, Any]]:
        """Probe each part this node needs (blob store, catalog, cache) and time it.

        Never raises: a failing probe is ``{"ok": False, "error": ...}``.
        """
        root = self.cache.root
        return {
            "blobs": _probe(self.blobs.check, self.blobs.describe()),
            "catalog": _probe(self.catalog.check, self.catalog.describe()),
            "cache": _probe(lambda: check_writable(root), str(root)),
        }

    @property
    def has_legacy_attachments(self) -> bool:
        """Whether originals may still be CouchDB attachments (``huimages migrate``)."""
        from ..storage.migrating import MigratingBlobStore  # only with CouchDB

        return isinstance(self.blobs, MigratingBlobStore)

    def migrate_one(self, imageid: str) -> str:
        """Move one legacy attachment original to the blob store; what happened."""
        from ..storage.migrating import migrate_one  # only with CouchDB

        if not self.has_legacy_attachments:
            raise NotConfigured("migrate needs HUIMAGESCOUCHSERVER (the legacy attachments)")
        return migrate_one(self.blobs, imageid)  # type: ignore[arg-type]


class NotConfigured(HuImagesError):
    """The operation needs a backend this configuration does not have."""

    status = 400


def _probe(probe: Callable[[], object], backend: str) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {"backend": backend}
    try:
        probe()
    except Exception as exc:  # any failure is an answer here, never a 500
        result.update(ok=False, error=str(exc)[:500] or type(exc).__name__)
    else:
        result["ok"] = True
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result
