"""Stand-in for the real huimages WSGI app, for the web server tests.

It follows the app contract the lighttpd/Apache configs rely on:

* ``/<size>/<ID>.<ext>`` and ``/<size>/<ID>/<seo-name>.<ext>``;
  size must match ``^(o|\\d+x\\d+!?|[a-z]+)$`` (else 400), ID is
  ``[A-Z0-9]{34}``; IDs starting with ``AAAA`` are "unknown" (404);
  ``?sig=bad`` is a bad signature (403).
* On success it writes ``<cache>/<size>/<ID>.<ext>`` atomically (dot-prefixed
  temp file, chmod 0644 so a web server running as www-data can read it,
  ``os.replace``) and answers 200 with the same bytes.  The bytes contain a
  random token, so a test can tell "served again from disk" from
  "generated again".
* ``?xsendfile=1``: writes the file but answers with an ``X-Sendfile`` header
  and no body (lighttpd's allow-x-send-file).
* ``/__env__/...``: answers JSON with the CGI variables it received and the
  path it resolved, to document what each web server passes.

Generated answers carry ``X-Generated-By: fake-image-app``, ``X-Fake-Path``
(the resolved path) and ``X-Fake-Query`` (QUERY_STRING), which static
serving by the web server never has.

The cache dir comes from ``HUIMAGES_CACHE_DIR`` (read per request), so the
module-level :data:`app` can be started by import string
(``tests.fake_image_app:app``) in a FastCGI subprocess; :func:`make_app` takes it
explicitly.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
from urllib.parse import parse_qs, unquote_to_bytes

SIZE_RE = re.compile(r"^(o|\d+x\d+!?|[a-z]+)$")
IMAGE_RE = re.compile(
    r"^/(?P<size>[^/]+)/(?P<id>[A-Z0-9]{34})(?:/(?P<seo>[^/]+))?\.(?P<ext>jpeg|webp|avif|png)$"
)
UNKNOWN_ID_PREFIX = "AAAA"
CONTENT_TYPES = {
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "avif": "image/avif",
    "png": "image/png",
}
ENV_KEYS = (
    "PATH_INFO",
    "SCRIPT_NAME",
    "REQUEST_URI",
    "QUERY_STRING",
    "SCRIPT_FILENAME",
    "DOCUMENT_ROOT",
    "REDIRECT_STATUS",
    "REQUEST_METHOD",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_SOFTWARE",
)


def request_path(environ) -> str:
    """The request path the app routes on.

    PATH_INFO if the server (or flup) provided one; otherwise the path part of
    REQUEST_URI, percent-decoded (as latin-1 native string, PEP 3333), with a
    SCRIPT_NAME prefix removed when it really is a prefix.
    """
    path = environ.get("PATH_INFO") or ""
    if path:
        return path
    raw = (environ.get("REQUEST_URI") or "").split("?", 1)[0]
    path = unquote_to_bytes(raw.encode("latin-1")).decode("latin-1")
    script = (environ.get("SCRIPT_NAME") or "").rstrip("/")
    if script and (path == script or path.startswith(script + "/")):
        path = path[len(script) :]
    return path


def _write_atomic(target: str, data: bytes) -> None:
    directory = os.path.dirname(target)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600: the web server could not read it
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def make_app(cache_dir: str | None = None):
    def app(environ, start_response):
        root = cache_dir or os.environ["HUIMAGES_CACHE_DIR"]
        path = request_path(environ)
        query = environ.get("QUERY_STRING", "")
        extra = [
            ("X-Generated-By", "fake-image-app"),
            ("X-Fake-Path", path),
            ("X-Fake-Query", query),
        ]

        def reply(status, body, ctype="text/plain; charset=utf-8", headers=()):
            start_response(
                status,
                [("Content-Type", ctype), ("Content-Length", str(len(body)))]
                + extra
                + list(headers),
            )
            return [body]

        if path.startswith("/__env__/"):
            seen = {k: environ.get(k) for k in ENV_KEYS}
            seen["resolved_path"] = path
            return reply("200 OK", json.dumps(seen).encode(), "application/json")

        m = IMAGE_RE.match(path)
        if not m:
            return reply("404 Not Found", b"fake-app: no such route\n")
        size, image_id, ext = m.group("size"), m.group("id"), m.group("ext")
        if not SIZE_RE.match(size):
            return reply("400 Bad Request", b"fake-app: bad size\n")
        if image_id.startswith(UNKNOWN_ID_PREFIX):
            return reply("404 Not Found", b"fake-app: unknown image id\n")
        params = parse_qs(query)
        if params.get("sig") == ["bad"]:
            return reply("403 Forbidden", b"fake-app: bad signature\n")

        body = f"FAKE-{ext.upper()} {size}/{image_id} {secrets.token_hex(8)}\n".encode()
        target = os.path.join(root, size, f"{image_id}.{ext}")
        _write_atomic(target, body)
        if params.get("xsendfile") == ["1"]:
            # no body and no Content-Length: the web server sends the file
            start_response(
                "200 OK", [("Content-Type", CONTENT_TYPES[ext]), ("X-Sendfile", target)] + extra
            )
            return [b""]
        return reply("200 OK", body, CONTENT_TYPES[ext])

    return app


app = make_app()
