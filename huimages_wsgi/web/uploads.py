"""What the upload fronts accept: request bodies, form fields and metadata, with one set of limits.

The HTTP API (api.py) and the browse page's form (browse.py) read uploads
through here, so both refuse the same things with the same words: bodies
over ``HUIMAGES_MAX_UPLOAD_BYTES`` (413, from Content-Length before a byte
is read), malformed multipart or JSON (400), text that is too long or not
valid Unicode (400). The image bytes themselves are validated by the store.
"""

from __future__ import annotations

import io
import json
import math
import posixpath
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from webob import Request

from ..core.errors import ImageTooLarge, RequestRefused
from ..store.metadata import TIMESTAMP_RE

MULTIPART_SLACK = 64 << 10  # form fields and part headers around the image
JSON_LIMIT = 64 << 10  # a PATCH body
TEXT_LIMIT = 2000  # characters of a title, type, file name or reference value
REFERENCES_LIMIT = 100  # keys per request
TAGS_LIMIT = 50  # tags per request
_CHUNK = 1 << 16


def read_body(environ: dict[str, Any], limit: int, what: str = "upload") -> bytes:
    """The whole body, refusing (413) before reading when Content-Length exceeds ``limit``.

    A chunked body (no Content-Length) is read up to ``limit`` and refused as
    soon as it goes beyond; a body with neither is a 411.
    """
    stream = environ["wsgi.input"]
    length_text = environ.get("CONTENT_LENGTH") or ""
    if length_text:
        if not length_text.isdigit():
            raise RequestRefused(400, f"invalid Content-Length {length_text[:40]!r}")
        length = int(length_text)
        if length > limit:
            raise ImageTooLarge(f"{what} is {length} bytes; the limit is {limit}")
        data = _read(stream, length)
        if len(data) < length:
            raise RequestRefused(400, f"{what} ended after {len(data)} of {length} bytes")
        return data
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        data = _read(stream, limit + 1)
        if len(data) > limit:
            raise ImageTooLarge(f"{what} is larger than the limit of {limit} bytes")
        return data
    raise RequestRefused(411, f"send the {what} with a Content-Length (or chunked)")


def _read(stream: Any, most: int) -> bytes:
    buffer = io.BytesIO()
    while buffer.tell() < most:
        chunk = stream.read(min(_CHUNK, most - buffer.tell()))
        if not chunk:
            break
        buffer.write(chunk)
    return buffer.getvalue()


def parse_multipart(
    environ: dict[str, Any], body: bytes, strict: bool = True
) -> tuple[bytes | None, dict[str, str]]:
    """The bytes of part ``file`` (None when there is none) and every other field as text.

    ``strict`` (the API) refuses a repeated field or a file where text
    belongs with a 400; a browser form is not strict: such a field counts as
    empty, and a form with two files sends the first.
    """
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
        raise RequestRefused(400, f"malformed multipart body: {exc}") from exc
    files = [value for key, value in items if key == "file" and hasattr(value, "file")]
    if strict and (len(files) != 1 or len(files) != sum(key == "file" for key, _ in items)):
        raise RequestRefused(400, "a multipart upload needs exactly one file part named 'file'"
                             " (curl -F file=@photo.jpg)")
    fields: dict[str, str] = {}
    for key, value in items:
        if key == "file":
            continue
        if not isinstance(value, str) or key in fields:
            if strict:
                raise RequestRefused(400, f"field {key!r} must appear once, as text")
            value = fields.get(key, "") if isinstance(value, str) else ""
        fields[key] = value
    if not files:
        return None, fields
    fields.setdefault("filename", files[0].filename or "")
    return files[0].value, fields


def query_fields(environ: dict[str, Any]) -> dict[str, str]:
    """Metadata for a raw upload travels in the query string (``?title=...``)."""
    parsed = parse_qs(environ.get("QUERY_STRING", ""), errors="replace")
    return {key: values[-1] for key, values in parsed.items()}


def parse_json(text: str | bytes, what: str) -> Any:
    """``json.loads`` with every way it fails on hostile input as a 400.

    Deep nesting (``[[[[...``, well within the body limit) makes the decoder
    raise RecursionError, which is no ValueError and would otherwise be a 500.
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise RequestRefused(400, f"{what}: JSON nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestRefused(400, f"{what}: invalid JSON: {exc}") from exc


def json_object(body: bytes) -> dict[str, Any]:
    value = parse_json(body, "body")
    if not isinstance(value, dict):
        raise RequestRefused(400, "the JSON body must be an object")
    return value


def text_field(fields: Mapping[str, Any], name: str) -> str:
    value = fields.get(name)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > TEXT_LIMIT:
        raise RequestRefused(400, f"{name!r} must be a string of at most {TEXT_LIMIT} characters")
    check_encodable(value, name)
    return value


def check_encodable(value: str, name: str) -> None:
    """Refuse text that is not valid Unicode, such as JSON's lone ``"\\ud800"``.

    Python keeps such a surrogate in a str; stored, it would make every page
    that shows it fail on UTF-8 encoding, long after the request that sent it.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestRefused(
            400, f"{name!r} is not valid Unicode text (a lone surrogate?)"
        ) from None


def timestamp_field(value: str | None) -> str | None:
    """An explicit ctime/mtime for imports, as ``20090129T123456.000123``."""
    if value is None:
        return None
    if not TIMESTAMP_RE.fullmatch(value):
        raise RequestRefused(400, "timestamp must look like 20090129T123456.000123")
    return value


def _json_scalar(item: Any) -> bool:
    """Numbers every JSON consumer (CouchDB's JavaScript included) reads back unchanged."""
    if isinstance(item, bool):
        return True
    if isinstance(item, int):
        return abs(item) <= 2**53
    return isinstance(item, float) and math.isfinite(item)


def tags_field(value: Any) -> list[str]:
    """A JSON list of tags (non-empty strings); ``[]`` when absent."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > TAGS_LIMIT or not all(
            isinstance(tag, str) and tag.strip() and len(tag) <= TEXT_LIMIT for tag in value):
        raise RequestRefused(400, f"tags must be a JSON list of at most {TAGS_LIMIT} non-empty"
                                  f" strings of at most {TEXT_LIMIT} characters")
    for tag in value:
        check_encodable(tag, "tags")
    return value


def int_field(value: str | None, name: str, default: int) -> int:
    """A whole number from a query parameter; ``default`` when absent."""
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdecimal()) or len(value) > 6:
        raise RequestRefused(400, f"{name} must be a whole number")
    return int(value)


def references_field(value: Any) -> dict[str, Any]:
    """A JSON object of scalars (``{"sku": "14600"}``); text is parsed as JSON first."""
    if isinstance(value, str):
        value = parse_json(value, "references")
    if not isinstance(value, dict) or len(value) > REFERENCES_LIMIT:
        raise RequestRefused(
            400, f"references must be a JSON object of at most {REFERENCES_LIMIT} keys"
        )
    for key, item in value.items():
        check_encodable(key, "references")
        if isinstance(item, str) and len(item) <= TEXT_LIMIT:
            check_encodable(item, f"references[{key!r}]")
            continue
        if _json_scalar(item):
            continue
        raise RequestRefused(400, f"references[{key!r}] must be a string, number or boolean")
    return value


def read_form(
    environ: dict[str, Any], limit: int, strict: bool = True
) -> tuple[bytes | None, dict[str, str]]:
    """A multipart upload: the bytes of part ``file`` (at most ``limit``; None when there
    is no file) and the other fields (see ``parse_multipart`` for ``strict``)."""
    body = read_body(environ, limit + MULTIPART_SLACK)
    data, fields = parse_multipart(environ, body, strict)
    if data is not None and len(data) > limit:
        raise ImageTooLarge(f"the file is {len(data)} bytes; the limit is {limit}")
    return data, fields


def upload_metadata(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``save_image`` keyword arguments from checked text fields (absent ones left out)."""
    references = fields.get("references")
    metadata: dict[str, Any] = {
        "title": text_field(fields, "title"),
        "typ": text_field(fields, "type"),
        "filename": safe_filename(text_field(fields, "filename")) or "image.jpeg",
        "timestamp": timestamp_field(fields.get("timestamp")),
    }
    if references is not None:
        metadata["references"] = references_field(references)
    tags = fields.get("tags")
    if tags is not None:  # a JSON list, as in a PATCH
        metadata["tags"] = tags_field(parse_json(tags, "tags") if isinstance(tags, str) else tags)
    return metadata


def safe_filename(name: str) -> str:
    """The last component of a client's file name (browsers may send a whole path)."""
    return posixpath.basename(name.replace("\\", "/"))
