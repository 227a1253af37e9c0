"""The URL forms huImages 2.2 answered that the canonical ones do not cover.

huImages' ``server.py`` took ``/<size>/<segment>[/anything]``: the size ``o``
or ``WxH[!]`` (leading zeros allowed), the ID as the segment with any of the
characters of ``.jpeg`` stripped from its ends (so ``<ID>``, ``<ID>.jpg``,
``<ID>.jpe``), whatever followed ignored, and JPEG bytes for every scaled
size. Pages, mails and databases hold such links; each is answered with a
301 to the canonical URL of the same variant (web/middleware.py)::

    >>> legacy_request("/075x075/<ID>.jpg")   # doctest: +SKIP
    LegacyRequest(size_text='75x75', imageid='<ID>', ext='jpeg')

An ``o`` link leaves the extension open: the original's own type decides it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .ids import is_valid_id

_SIZE = re.compile(r"o|(\d{1,9})x(\d{1,9})(!?)")
#: What huImages stripped from the ID's segment (``str.strip("jpeg.")``).
_STRIPPED = "jpeg."


class LegacyRequest(NamedTuple):
    size_text: str  # canonical: no leading zeros
    imageid: str
    ext: str | None  # None: the original's own extension


def legacy_request(path: str) -> LegacyRequest | None:
    """The variant a huImages link names, or None when the path is not one."""
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "":
        return None
    size = _SIZE.fullmatch(parts[1])
    imageid = parts[2].strip(_STRIPPED)
    if size is None or not is_valid_id(imageid):
        return None
    if parts[1] == "o":
        return LegacyRequest("o", imageid, None)
    width, height, crop = size.groups()
    return LegacyRequest(f"{int(width)}x{int(height)}{crop}", imageid, "jpeg")
