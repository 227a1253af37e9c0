"""Bearer tokens for the write side of the HTTP API and the browse page's form.

One shared secret (``HUIMAGES_UPLOAD_TOKEN``) rather than accounts: huImages
is a backend service, and whoever may upload is whoever the operator gave the
token to. No token configured means writes over HTTP are disabled entirely.
"""

from __future__ import annotations

import hmac
from typing import Any

from ..core.config import Config


def bearer_token(environ: dict[str, Any]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def uploads_enabled(config: Config) -> bool:
    return bool(config.upload_token)


def token_ok(config: Config, presented: str | None) -> bool:
    """Constant-time comparison; always False while uploads are disabled."""
    expected = config.upload_token
    if not expected or not presented:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())
