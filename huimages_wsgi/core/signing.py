"""URL signatures that gate the expensive path (generating a variant).

HMAC-SHA256 over ``<size>/<ID>.<ext>`` with the configured secret, truncated
to 128 bits and base64url-encoded, carried as ``?sig=`` so the path, and thus
the cache file name a webserver serves, stays the same with or without it.
The extension is signed too: a signature for ``.jpeg`` makes no ``.avif``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

SIGNATURE_BYTES = 16


def sign(secret: str, size_name: str, imageid: str, ext: str) -> str:
    """The signature of the variant ``/<size_name>/<imageid>.<ext>`` (any SEO name)."""
    message = f"{size_name}/{imageid}.{ext}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()[:SIGNATURE_BYTES]
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def verify(secret: str, size_name: str, imageid: str, ext: str, signature: str | None) -> bool:
    """Constant-time comparison; a missing or malformed signature is simply wrong."""
    if not signature or len(signature) > 64:
        return False
    expected = sign(secret, size_name, imageid, ext)
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))
