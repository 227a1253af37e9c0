"""Where an image's crops are centred: its focal point, set, cleared, and followed.

Usage::

    set_focus(store, imageid, 0.3, 0.25)   # crops (WxH!) centre on 30 % across, 25 % down
    set_focus(store, imageid)              # cleared: crops centre on the middle again

The point is kept in the image's document as ``focus: [x, y]``, fractions
of the upright original, with ``focus_time``, which becomes the Last-Modified
of its crops (renderer.py). URLs do not change: this node's variants of the
image are purged at once, every other node's by its follower (the point is
part of what cached variants depend on, follower.fingerprint), and the shared
caches in front with them (purges.py). Fits do not depend on it, and
``scaled_dimensions`` never does.
"""

from __future__ import annotations

from typing import Any

from ..core.ids import validate_id
from ..storage import Doc, timestamp
from .httpstore import HttpImageStore
from .metadata import checked_focus


def set_focus(store: Any, imageid: str, x: float | None = None, y: float | None = None) -> Doc:
    """Set the focus of ``imageid`` to (``x``, ``y``), or clear it (both None); the
    document. ImageNotFound for an unknown image, InvalidFocus for a point outside it."""
    validate_id(imageid)
    point = None if x is None and y is None else checked_focus(x, y)
    if isinstance(store, HttpImageStore):
        return store.set_focus(imageid, point)
    store.get_imagedoc(imageid)  # ImageNotFound before anything changes

    def change(doc: Doc) -> None:
        if point is None:
            doc.pop("focus", None)
        else:
            doc["focus"] = point
        doc["focus_time"] = timestamp()

    doc = store.catalog.update(imageid, change)
    store.purge(imageid)  # this node's at once; the other nodes' followers theirs
    return doc
