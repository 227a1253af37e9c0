"""How an image's document takes metadata: titles, references and types accumulate, as
in huImages, and the times are kept in its text form.

    merge_metadata(doc, when=as_timestamp(None), title="Red bike", references=None, typ="")
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from ..storage import Doc, timestamp


def merge_metadata(
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
