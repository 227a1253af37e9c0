"""The HTTP API: upload, describe, annotate and delete images with a bearer token.

Mounted by ``make_app`` at ``/_api`` (``/_`` names never collide with image
URLs, which start with a size)::

    POST   /_api/images         raw image/jpeg body, or multipart/form-data field "file"
    GET    /_api/images/<ID>    the metadata document (as ``huimages info`` prints it)
    PATCH  /_api/images/<ID>    JSON {"title": ..., "references": {...}, "type": ...}
    DELETE /_api/images/<ID>    204

Every route needs ``Authorization: Bearer <HUIMAGES_UPLOAD_TOKEN>``: reading
too, because the document carries references, file names and types that the
public image URLs do not reveal (the title is already public, in the URL's
name part). Without a configured token the API answers 404 "disabled" to
everything, so an unconfigured server never accepts writes.

Uploads go through ``ImageStore.save_image``, so the limits are exactly
those of the direct path (``HUIMAGES_MAX_UPLOAD_BYTES``, ``HUIMAGES_MAX_PIXELS``,
JPEG only). The size limit is checked from Content-Length before a byte of
the body is read, and while reading a chunked body. Answers are JSON, errors
``{"error": ..., "status": ...}``; bad input is always a 4xx, never a 500.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs

from webob import Request, Response

from .auth import bearer_token, token_ok, uploads_enabled
from .config import Config
from .errors import (
    BackendUnavailable,
    GenerationBusy,
    HuImagesError,
    ImageTooLarge,
)
from .follower import deletion_answer
from .ids import compute_id, validate_id
from .responses import json_response
from .storage import Doc, is_live
from .store import ImageStore

log = logging.getLogger("huimages_wsgi")

MULTIPART_SLACK = 64 << 10  # form fields and part headers around the image
JSON_LIMIT = 64 << 10  # a PATCH body
TEXT_LIMIT = 2000  # characters of a title, type or reference value
REFERENCES_LIMIT = 100  # keys per request
UPLOAD_FIELDS = frozenset({"title", "type", "references", "filename", "timestamp"})
_TIMESTAMP_RE = re.compile(r"[0-9]{8}T[0-9]{6}(\.[0-9]{1,6})?")  # huImages' own format
PATCH_FIELDS = frozenset({"title", "type", "references"})
RAW_TYPES = ("image/", "application/octet-stream")
ITEM_METHODS = ("GET", "HEAD", "PATCH", "DELETE")
WALK = ("next", "previous")
_CHUNK = 1 << 16


class ApiError(HuImagesError):
    """An HTTP-level refusal (auth, method, media type, syntax) with its own status."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})


def error_response(exc: HuImagesError) -> Response:
    headers = dict(getattr(exc, "headers", {}))
    return json_response(exc.status, {"error": str(exc), "status": exc.status}, headers)


class ApiApp:
    """The write (and metadata) API for one store; a WSGI application."""

    def __init__(self, store: ImageStore) -> None:
        self.store = store

    @property
    def config(self) -> Config:
        return self.store.config

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self.route(request)
        except HuImagesError as exc:
            if isinstance(exc, BackendUnavailable | GenerationBusy):
                log.warning("%s %s %s: %s", exc.status, request.method, _path(environ), exc)
            response = error_response(exc)
        except Exception:
            log.exception("unexpected error in %s %r", request.method, _path(environ))
            response = json_response(500, {"error": "internal error", "status": 500})
        return response(environ, start_response)

    # -- routing -------------------------------------------------------------

    def route(self, request: Request) -> Response:
        if not uploads_enabled(self.config):
            raise ApiError(404, "the HTTP API is disabled here: no HUIMAGES_UPLOAD_TOKEN is set")
        parts = _path(request.environ).strip("/").split("/")
        if parts == ["images"]:
            self.allow(request, ("POST",))
            return self.upload(request)
        if len(parts) == 2 and parts[0] == "images":
            self.allow(request, ITEM_METHODS)
            imageid = validate_id(parts[1])
            if request.method == "PATCH":
                return self.patch(request, imageid)
            if request.method == "DELETE":  # what is gone where, and when elsewhere
                removed = self.store.delete_image(imageid)
                return json_response(200, deletion_answer(imageid, removed, self.config))
            return json_response(200, self.store.get_imagedoc(imageid))
        if parts == ["random"] or (len(parts) == 3 and parts[0] == "images" and parts[2] in WALK):
            self.allow(request, ("GET", "HEAD"))
            return json_response(200, {"id": self.walk(parts)})
        raise ApiError(
            404, "no such API resource: use /_api/images, /_api/images/<ID>[/next|/previous]"
            " or /_api/random"
        )

    def walk(self, parts: list[str]) -> str | None:
        """Browsing for remote clients: a neighbour or a random live image (None: none)."""
        if parts == ["random"]:
            return self.store.get_random_imageid()
        imageid = validate_id(parts[1])
        if parts[2] == "next":
            return self.store.get_next_imageid(imageid)
        return self.store.get_previous_imageid(imageid)

    def allow(self, request: Request, methods: tuple[str, ...]) -> None:
        """405 for a wrong method, then 401/403 unless the right bearer token came along."""
        if request.method not in methods:
            raise ApiError(
                405, f"method {request.method} not allowed here: use {', '.join(methods)}",
                {"Allow": ", ".join(methods)},
            )
        presented = bearer_token(request.environ)
        if presented is None:
            raise ApiError(
                401, "missing bearer token: send 'Authorization: Bearer <HUIMAGES_UPLOAD_TOKEN>'",
                {"WWW-Authenticate": 'Bearer realm="huimages"'},
            )
        if not token_ok(self.config, presented):
            raise ApiError(403, "wrong bearer token")

    # -- handlers ------------------------------------------------------------

    def upload(self, request: Request) -> Response:
        """201 for a new image, 200 when the same bytes were stored before (metadata merged)."""
        media_type = (request.content_type or "").lower()
        limit = self.config.max_upload_bytes
        fields = _query_fields(request.environ)
        if media_type == "multipart/form-data":
            body = read_body(request.environ, limit + MULTIPART_SLACK)
            data, form = _parse_multipart(request.environ, body)
            fields.update(form)
        elif media_type.startswith(RAW_TYPES):
            data = read_body(request.environ, limit)
        else:
            raise ApiError(
                415, "send the image as the body with Content-Type: image/jpeg, or as"
                " multipart/form-data field 'file'",
            )
        unknown = set(fields) - UPLOAD_FIELDS
        if unknown:
            raise ApiError(400, f"unknown field(s) {sorted(unknown)}; use {sorted(UPLOAD_FIELDS)}")
        references = _references(fields["references"]) if "references" in fields else None
        existed = is_live(self.store.catalog.get(compute_id(data))) if data else False
        imageid = self.store.save_image(
            data,
            title=_text(fields, "title"),
            references=references,
            filename=_text(fields, "filename") or "image.jpeg",
            typ=_text(fields, "type"),
            timestamp=_timestamp(fields.get("timestamp")),
        )
        location = f"{request.script_name}/images/{imageid}"
        return json_response(200 if existed else 201, self.summary(imageid), {"Location": location})

    def patch(self, request: Request, imageid: str) -> Response:
        if (request.content_type or "").lower() != "application/json":
            raise ApiError(415, "send the changes as Content-Type: application/json")
        changes = _json_object(read_body(request.environ, JSON_LIMIT, what="JSON body"))
        unknown = set(changes) - PATCH_FIELDS
        if unknown:
            raise ApiError(400, f"unknown field(s) {sorted(unknown)}; use {sorted(PATCH_FIELDS)}")
        references = changes.get("references")
        doc = self.store.update_metadata(
            imageid,
            title=_text(changes, "title"),
            references=_references(references) if references is not None else None,
            typ=_text(changes, "type"),
        )
        return json_response(200, doc)

    def summary(self, imageid: str) -> dict[str, Any]:
        """What an uploader needs next: the ID, the dimensions and ready-made URLs."""
        doc: Doc = self.store.get_imagedoc(imageid)
        urls = {"o": self.store.imageurl(imageid)}
        for name in self.config.presets:
            try:
                urls[name] = self.store.scaled_imageurl(imageid, name)
            except HuImagesError:  # a preset outside HUIMAGES_ALLOWED_SIZES has no URL
                continue
        return {
            "id": imageid,
            "width": doc.get("width"),
            "height": doc.get("height"),
            "length": doc.get("length"),
            "urls": urls,
        }


# -- request bodies ------------------------------------------------------------------


def read_body(environ: dict[str, Any], limit: int, what: str = "upload") -> bytes:
    """The whole body, refusing (413) before reading when Content-Length exceeds ``limit``.

    A chunked body (no Content-Length) is read up to ``limit`` and refused as
    soon as it goes beyond; a body with neither is a 411.
    """
    stream = environ["wsgi.input"]
    length_text = environ.get("CONTENT_LENGTH") or ""
    if length_text:
        if not length_text.isdigit():
            raise ApiError(400, f"invalid Content-Length {length_text[:40]!r}")
        length = int(length_text)
        if length > limit:
            raise ImageTooLarge(f"{what} is {length} bytes; the limit is {limit}")
        data = _read(stream, length)
        if len(data) < length:
            raise ApiError(400, f"{what} ended after {len(data)} of {length} bytes")
        return data
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        data = _read(stream, limit + 1)
        if len(data) > limit:
            raise ImageTooLarge(f"{what} is larger than the limit of {limit} bytes")
        return data
    raise ApiError(411, f"send the {what} with a Content-Length (or chunked)")


def _read(stream: Any, most: int) -> bytes:
    buffer = io.BytesIO()
    while buffer.tell() < most:
        chunk = stream.read(min(_CHUNK, most - buffer.tell()))
        if not chunk:
            break
        buffer.write(chunk)
    return buffer.getvalue()


def _parse_multipart(environ: dict[str, Any], body: bytes) -> tuple[bytes, dict[str, str]]:
    """The image bytes of field ``file`` and every other field as text."""
    form_request = Request(
        {
            "REQUEST_METHOD": "POST",
            "CONTENT_TYPE": environ.get("CONTENT_TYPE", ""),
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
        }
    )
    try:
        form = form_request.POST
        items = list(form.items())
    except Exception as exc:  # the cgi-based parser raises many kinds on garbage
        raise ApiError(400, f"malformed multipart body: {exc}") from exc
    files = [value for key, value in items if key == "file"]
    if len(files) != 1 or not hasattr(files[0], "file"):
        raise ApiError(400, "a multipart upload needs exactly one file part named 'file'"
                       " (curl -F file=@photo.jpg)")
    fields: dict[str, str] = {}
    for key, value in items:
        if key == "file":
            continue
        if not isinstance(value, str) or key in fields:
            raise ApiError(400, f"field {key!r} must appear once, as text")
        fields[key] = value
    fields.setdefault("filename", files[0].filename or "")
    return files[0].value, fields


def _query_fields(environ: dict[str, Any]) -> dict[str, str]:
    """Metadata for a raw upload travels in the query string (``?title=...``)."""
    parsed = parse_qs(environ.get("QUERY_STRING", ""), errors="replace")
    return {key: values[-1] for key, values in parsed.items()}


def _parse_json(text: str | bytes, what: str) -> Any:
    """``json.loads`` with every way it fails on hostile input as a 400.

    Deep nesting (``[[[[...``, well within the body limit) makes the decoder
    raise RecursionError, which is no ValueError and would otherwise be a 500.
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise ApiError(400, f"{what}: JSON nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, f"{what}: invalid JSON: {exc}") from exc


def _json_object(body: bytes) -> dict[str, Any]:
    value = _parse_json(body, "body")
    if not isinstance(value, dict):
        raise ApiError(400, "the JSON body must be an object")
    return value


def _text(fields: Mapping[str, Any], name: str) -> str:
    value = fields.get(name)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > TEXT_LIMIT:
        raise ApiError(400, f"{name!r} must be a string of at most {TEXT_LIMIT} characters")
    _check_encodable(value, name)
    return value


def _check_encodable(value: str, name: str) -> None:
    """Refuse text that is not valid Unicode, such as JSON's lone ``"\\ud800"``.

    Python keeps such a surrogate in a str; stored, it would make every page
    that shows it fail on UTF-8 encoding, long after the request that sent it.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"{name!r} is not valid Unicode text (a lone surrogate?)") from None


def _timestamp(value: str | None) -> str | None:
    """An explicit ctime/mtime for imports, as ``20090129T123456.000123``."""
    if value is None:
        return None
    if not _TIMESTAMP_RE.fullmatch(value):
        raise ApiError(400, "timestamp must look like 20090129T123456.000123")
    return value


def _path(environ: dict[str, Any]) -> str:
    """PATH_INFO as the server gave it (WebOb's ``path_info`` raises on non-UTF-8 bytes)."""
    return environ.get("PATH_INFO", "")


def _json_scalar(item: Any) -> bool:
    """Numbers every JSON consumer (CouchDB's JavaScript included) reads back unchanged."""
    if isinstance(item, bool):
        return True
    if isinstance(item, int):
        return abs(item) <= 2**53
    return isinstance(item, float) and math.isfinite(item)


def _references(value: Any) -> dict[str, Any]:
    """A JSON object of scalars (``{"sku": "14600"}``); text is parsed as JSON first."""
    if isinstance(value, str):
        value = _parse_json(value, "references")
    if not isinstance(value, dict) or len(value) > REFERENCES_LIMIT:
        raise ApiError(400, f"references must be a JSON object of at most {REFERENCES_LIMIT} keys")
    for key, item in value.items():
        _check_encodable(key, "references")
        if isinstance(item, str) and len(item) <= TEXT_LIMIT:
            _check_encodable(item, f"references[{key!r}]")
            continue
        if _json_scalar(item):
            continue
        raise ApiError(400, f"references[{key!r}] must be a string, number or boolean")
    return value
