"""The ``broken`` mark: an original that did not decode, kept and re-testable.

A document may carry ``broken: {"reason": ..., "time": ...}``, set by
``ImageStore.mark_broken`` when a stored original fails to decode. It never
sets ``deleted``: the image stays in the catalog, and its variants answer 404
(``ImageBroken``) without decoding again. Only decoding failures mark: a
configured limit (``HUIMAGES_MAX_PIXELS``, byte limits) refuses the request
with a 422 and leaves the image alone.

huImages marked a failing original ``deleted: true`` plus
``broken: "<reason>"`` (so did this package's first version), and lowering a
limit for a while hid healthy images for good. ``check_image`` (``huimages check``)
re-opens marked images: one that decodes loses its mark, and one marked the
old way is un-deleted, as long as its original is still stored.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..core.errors import ImageNotFound, ImageTooLarge, InvalidImage
from ..storage.base import (
    BlobNotFound,
    GuardedReader,
    broken_mark,
    marked_the_old_way,
    timestamp,
)

if TYPE_CHECKING:
    from .imagestore import ImageStore

log = logging.getLogger("huimages_wsgi")

CLEARED = "cleared"  # was marked, decodes now: mark removed
REPAIRED = "repaired"  # was deleted by the old mark, decodes: un-deleted, mark removed
OK = "ok"  # was not marked and decodes
STILL_BROKEN = "still broken"  # was marked, still does not decode: mark kept (time updated)
MARKED = "marked broken"  # was not marked, does not decode: marked now
OVER_LIMIT = "over a limit"  # too big for this configuration: nothing decided, nothing changed
NO_ORIGINAL = "original missing"  # nothing stored to test: left as it is
DELETED = "deleted"  # deleted by a person, not by a mark: left alone
CHECK_OUTCOMES = (CLEARED, REPAIRED, OK, STILL_BROKEN, MARKED, OVER_LIMIT, NO_ORIGINAL, DELETED)
#: Outcomes that make ``huimages check`` exit non-zero.
PROBLEMS = frozenset({STILL_BROKEN, MARKED})


def explain_missing(store: ImageStore, imageid: str) -> str | None:
    """For ``huimages info`` on a hidden image: why, when a mark hid it (else None)."""
    doc = store.catalog.get(imageid)
    if not marked_the_old_way(doc):
        return None
    mark = broken_mark(doc) or {}
    return (f"image {imageid} was hidden by an older version when it did not decode"
            f" ({mark.get('reason')}); 'huimages check {imageid}' restores it if it decodes now")


def check_image(store: ImageStore, imageid: str) -> str:
    """Decode ``imageid``'s original again and set or clear its mark; one of ``CHECK_OUTCOMES``.

    The test is a complete decode (the first frame of an animation), whatever
    the format, so an original stored by an older server in a format uploads
    no longer take is not called broken for that.
    """
    doc = store.catalog.get(imageid)
    if not doc:
        raise ImageNotFound(f"no image {imageid}")
    marked, old_way = broken_mark(doc) is not None, marked_the_old_way(doc)
    if doc.get("deleted") and not old_way:
        return DELETED
    try:
        with store.blobs.open(imageid) as handle:
            data = GuardedReader(handle, f"the original of {imageid}").read()
    except BlobNotFound:
        return NO_ORIGINAL
    try:
        store.engine.verify(data)
    except ImageTooLarge as exc:
        log.warning("check %s: %s", imageid, exc)
        return OVER_LIMIT
    except InvalidImage as exc:
        if old_way:
            return STILL_BROKEN  # stays hidden as it was; its bytes stay too
        store.mark_broken(imageid, str(exc))
        return STILL_BROKEN if marked else MARKED
    if not marked:
        return OK

    def change(fresh: dict[str, Any]) -> None:
        if not fresh.get("broken"):
            return  # cleared meanwhile (a re-upload of the same bytes)
        if old_way and fresh.get("deleted"):
            fresh["deleted"] = False
        fresh.pop("broken")
        fresh["mtime"] = timestamp()

    if old_way and not store.blobs.exists(imageid):
        return NO_ORIGINAL  # deleted by a person since it was read
    store.catalog.update(imageid, change)
    log.info("check %s: decodes, mark removed%s", imageid, " and un-deleted" if old_way else "")
    return REPAIRED if old_way else CLEARED


def marked_ids(store: ImageStore) -> Iterator[str]:
    """Every image with a mark, deleted ones included (the old marks are deleted)."""
    for imageid in store.catalog.ids(include_deleted=True):
        if broken_mark(store.catalog.get(imageid)) is not None:
            yield imageid
