"""How an image's document takes metadata: titles, references and types accumulate, as
in huImages, and the times are kept in its text form.

    merge_metadata(doc, when=as_timestamp(None), title="Red bike", references=None, typ="")
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..core.errors import InvalidTimestamp
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

