"""Previews (and colour, placeholder, automatic focus) for images uploaded before they
existed (``huimages previews``).

An upload makes its previews from the pixels its validation decodes anyway
(imagestore.py); this does the same, later, for an image that has none, reading
its original back from the blob store. Idempotent and safe to interrupt.
"""

from __future__ import annotations

from ..core.previews import planned_previews, record_previews, recorded_previews
from ..storage import BlobNotFound, Doc, timestamp
from ..storage.base import GuardedReader, source_dimensions
from .imagestore import ImageStore

MADE = "made"
ALREADY_THERE = "already there"
NOT_NEEDED = "not needed"
NOT_SUPPORTED = "not supported"
PREVIEW_OUTCOMES = (MADE, ALREADY_THERE, NOT_NEEDED, NOT_SUPPORTED)


def ensure_previews(store: ImageStore, imageid: str) -> str:
    """``add_previews``, then ``ensure_summary`` (from the previews, once they are there)."""
    outcome = add_previews(store, imageid)
    ensure_summary(store, imageid, store.get_imagedoc(imageid))
    return outcome


def add_previews(store: ImageStore, imageid: str) -> str:
    """Make the previews an image lacks (one uploaded before they existed).

    Returns ``"made"``, ``"already there"``, ``"not needed"`` (an original
    too small for any), or ``"not supported"`` (a blob store that keeps
    none). The original is read and validated like an upload; one that no
    longer decodes raises InvalidImage and is left as it is.
    """
    doc = store.get_imagedoc(imageid)
    source = source_dimensions(doc)
    if source is not None:
        wanted = {name for name, _, _ in planned_previews(*source)}
        if not wanted:
            return NOT_NEEDED
        if wanted <= set(recorded_previews(doc)):
            return ALREADY_THERE
    with store.blobs.open(imageid) as handle:
        data = GuardedReader(handle, f"the original of {imageid}").read()
    info = store.engine.inspect(data, previews=True)
    if not info.previews:
        return NOT_NEEDED
    kept = store.keep_previews(imageid, info.previews)
    if not kept:
        return NOT_SUPPORTED

    def change(doc: Doc) -> None:
        doc.update(width=info.width, height=info.height)
        record_previews(doc, kept)

    store.catalog.update(imageid, change)
    return MADE


def ensure_summary(store: ImageStore, imageid: str, doc: Doc) -> bool:
    """Colour, placeholder and automatic focus (summary.py) for an image uploaded before
    they existed, from its smallest preview or its original; True when made."""
    if doc.get("color") and doc.get("placeholder") and (
            "focus_auto" in doc or not store.config.auto_focus):
        return False
    recorded = recorded_previews(doc)
    smallest = min(recorded, key=lambda name: recorded[name][0], default=None)
    try:
        opened = store.blobs.open_derived(imageid, smallest) if smallest else None
    except BlobNotFound:
        opened = None
    with opened or store.blobs.open(imageid) as handle:
        data = GuardedReader(handle, f"a copy of {imageid}").read()
    fields = store.summary_fields(data)
    if not fields:
        return False
    if "focus_auto" in fields and not doc.get("focus"):  # its crops change: say when
        fields["focus_time"] = timestamp()
    store.catalog.update(imageid, lambda stored: stored.update(fields) if stored else None)
    return True

