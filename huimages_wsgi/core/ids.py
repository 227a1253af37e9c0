"""Content-derived image IDs.

An ID is the base32 SHA-1 of the original bytes plus a two-digit cluster
suffix, so the same bytes always get the same ID and an ID never needs a
lookup to be checked for shape. IDs reach the filesystem (cache paths) and
backends (S3 keys, CouchDB doc ids), so they are validated strictly.
"""

from __future__ import annotations

import base64
import hashlib
import re

from .errors import InvalidImageId

CLUSTER_SUFFIX = "01"
_ID_RE = re.compile(r"[A-Z2-7]{32}[0-9]{2}")


def compute_id(data: bytes, suffix: str = CLUSTER_SUFFIX) -> str:
    """Return the ID that the original huImages gave these bytes."""
    digest = hashlib.sha1(data, usedforsecurity=False).digest()
    return base64.b32encode(digest).decode("ascii").rstrip("=") + suffix


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def validate_id(value: object) -> str:
    """Return value if it is a well-formed ID, else raise InvalidImageId."""
    if not is_valid_id(value):
        raise InvalidImageId(f"invalid image id: {str(value)[:80]!r}")
    return value  # type: ignore[return-value]
