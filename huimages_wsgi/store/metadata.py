"""How an image's document takes metadata: titles, references and types accumulate, as
in huImages, and the times are kept in its text form.

    merge_metadata(doc, when=as_timestamp(None), title="Red bike", references=None, typ="")
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..core.errors import InvalidFocus, InvalidTimestamp
from ..storage import Doc, timestamp

#: huImages' own form of a time, as its documents hold it.
TIMESTAMP_RE = re.compile(r"[0-9]{8}T[0-9]{6}(\.[0-9]{1,6})?")


def merge_metadata(
    doc: Doc, *, when: str, title: str, references: Mapping[str, Any] | None, typ: str,
    tags: Sequence[str] = (),
) -> None:
    """Accumulate metadata the way the original did: nothing is ever dropped. Tags (this
    project's, as huImages' image browser kept them) accumulate like titles."""
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
    for tag in tags:
        if tag and tag not in doc.setdefault("tags", []):
            doc["tags"].append(tag)


def as_timestamp(value: datetime.date | str | None) -> str:
    """A ``ctime``/``mtime`` in huImages' form (``20090129T123456.000123``): now for None,
    a date or datetime formatted, a string only when it has that form."""
    if value is None:
        return timestamp()
    if isinstance(value, datetime.datetime):
        return timestamp(value)
    if isinstance(value, datetime.date):
        return timestamp(datetime.datetime.combine(value, datetime.time()))
    if isinstance(value, str) and TIMESTAMP_RE.fullmatch(value):
        return value
    raise InvalidTimestamp(
        f"a timestamp is a datetime or text like 20090129T123456.000123, not {value!r:.40}")


def written_at(value: object) -> float | None:
    """A document's time (``20090129T123456.000123``) as POSIX seconds, whole; None for
    anything else. huImages and this store write it in the server's local time
    (``storage.timestamp``), so it is read back the same way: the nodes of a cluster,
    which share a catalog, share a timezone too."""
    if not isinstance(value, str) or not TIMESTAMP_RE.fullmatch(value):
        return None
    try:
        return float(int(datetime.datetime.strptime(value[:15], "%Y%m%dT%H%M%S").timestamp()))
    except (ValueError, OverflowError, OSError):
        return None


def focus_point(doc: Mapping[str, Any], auto: bool = True) -> tuple[float, float] | None:
    """Where a crop of the image is centred: the set ``focus`` ([x, y], fractions of the
    upright original), else (with ``auto``) the computed ``focus_auto``, else None (the
    middle)."""
    for key in ("focus", "focus_auto") if auto else ("focus",):
        point = doc.get(key)
        if (isinstance(point, list | tuple) and len(point) == 2
                and all(isinstance(v, int | float) and 0 <= v <= 1 for v in point)):
            return float(point[0]), float(point[1])
    return None


def checked_focus(x: Any, y: Any) -> list[float]:
    """``[x, y]`` as a document keeps it; InvalidFocus unless both are numbers in 0-1."""
    point = []
    for value in (x, y):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise InvalidFocus(f"a focus is two fractions of the image, 0 to 1, not {value!r:.20}")
        point.append(round(float(value), 4))
    return point

