"""Who is asking: bearer tokens, the browse page's session cookie, local clients.

One shared secret (``HUIMAGES_UPLOAD_TOKEN``) rather than accounts: huImages
is a backend service, and whoever may upload is whoever the operator gave the
token to. No token configured means writes over HTTP are disabled entirely,
and the browse page and the detail of ``/_health`` are for local clients only
(``is_local_client``: a browser on this machine talking to the server directly).

A browser cannot send an ``Authorization`` header when it follows a link, so
the browse page's token form trades the token for a cookie (``session_cookie``):
an expiry time and an HMAC of it keyed with the token, never the token itself.
Changing the token ends every session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from typing import Any

from ..core.config import Config

PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")
SESSION_COOKIE = "huimages_browse"
SESSION_SECONDS = 12 * 3600


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
    return hmac.compare_digest(expected.encode(), presented.encode("utf-8", "replace"))


def is_local_client(environ: dict[str, Any]) -> bool:
    """A browser on this machine talking to us directly (not through a proxy): a
    loopback client address, a loopback ``Host`` (no DNS rebinding), no proxy header."""
    if any(environ.get(header) for header in PROXY_HEADERS):
        return False
    try:
        if not ipaddress.ip_address(environ.get("REMOTE_ADDR", "")).is_loopback:
            return False
    except ValueError:
        return False
    host = environ.get("HTTP_HOST", "")
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def trusted(config: Config, environ: dict[str, Any]) -> bool:
    """A local client or the token's holder (``Authorization: Bearer``): for details
    such as ``/_health``'s paths that the operator may see and the public may not."""
    return is_local_client(environ) or token_ok(config, bearer_token(environ))


def session_cookie(config: Config, expires: int) -> str:
    """The browse session's cookie value until ``expires`` (Unix seconds)."""
    key = (config.upload_token or "").encode()
    digest = hmac.new(key, f"browse-session:{expires}".encode(), hashlib.sha256).digest()
    return f"{expires}.{base64.urlsafe_b64encode(digest[:16]).decode('ascii').rstrip('=')}"


def session_ok(config: Config, value: str | None, now: float) -> bool:
    """A session cookie this token made, not expired; never while no token is set."""
    if not config.upload_token or not value or len(value) > 64:
        return False
    expires = value.partition(".")[0]
    if not expires.isdigit() or int(expires) <= now:
        return False
    expected = session_cookie(config, int(expires))
    return hmac.compare_digest(expected.encode(), value.encode("utf-8", "replace"))
