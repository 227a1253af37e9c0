"""Finding images by what the application knows: its references, types and tags.

Usage::

    find_images(store.catalog, {"sku": "14600"})     # references, as save_image got them
    find_images(store.catalog, typ="product", tag="red", limit=20)
    tag_counts(store.catalog)                         # [("red", 12), ("bike", 3), ...]

huImages' image browser kept tags and shops look their images up by article
number. The catalogs index every live document's terms (``storage.base.
search_terms``: a CouchDB view, an SQLite table), so a lookup reads the
index, never the whole catalog. Several criteria find the images that have
them all. Newest first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.errors import HuImagesError
from ..storage import Catalog
from ..storage.base import term_text

#: The most images one lookup answers.
MAX_FOUND = 1000


class InvalidSearch(HuImagesError, ValueError):
    status = 400


def search_criteria(
    references: Mapping[str, Any], typ: str | None = None, tag: str | None = None
) -> list[tuple[str, str, str]]:
    """The terms asked for; InvalidSearch when there is none, or an empty one."""
    terms = [("reference", str(name), term_text(value)) for name, value in references.items()]
    terms += [(kind, "", value) for kind, value in (("type", typ), ("tag", tag)) if value]
    if not terms:
        raise InvalidSearch("say what to find: a reference (sku=...), a type or a tag")
    for kind, name, value in terms:
        if not name and kind == "reference" or not value:
            raise InvalidSearch(f"an empty {kind} finds nothing: give a value")
    return terms


def find_images(
    catalog: Catalog, references: Mapping[str, Any] | None = None, *,
    typ: str | None = None, tag: str | None = None, limit: int = 100,
) -> list[str]:
    """The IDs of the live images with every reference, type and tag given, newest first;
    with several, among the newest ``MAX_FOUND`` of each."""
    references = references or {}
    terms = search_criteria(references, typ, tag)
    limit = max(1, min(int(limit), MAX_FOUND))
    if len(terms) == 1:
        return catalog.find(*terms[0], limit)
    found = [catalog.find(*term, MAX_FOUND) for term in terms]
    common = set(found[0]).intersection(*found[1:])
    return [imageid for imageid in found[0] if imageid in common][:limit]


def tag_counts(catalog: Catalog, limit: int = 100) -> list[tuple[str, int]]:
    """The tags of live images and how many have each, the most used first."""
    return catalog.tag_counts(max(1, min(int(limit), MAX_FOUND)))
