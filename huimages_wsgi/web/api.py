"""The HTTP API: upload, describe, annotate and delete images with a bearer token.

Mounted by ``make_app`` at ``/_api`` (``/_`` names never collide with image
URLs, which start with a size)::

    POST   /_api/images         raw image/jpeg body, or multipart/form-data field "file"
    GET    /_api/images?reference.sku=14600&type=...&tag=...&limit=N   {"ids": [...]}
    GET    /_api/tags           {"tags": [[tag, count], ...]}, the most used first
    GET    /_api/images/<ID>    the metadata document (as ``huimages info`` prints it)
    PATCH  /_api/images/<ID>    JSON {"title": ..., "references": {...}, "type": ..., "tags": [...]}
    DELETE /_api/images/<ID>    200 {"deleted": ...}: what is gone where (docs/cluster.md)

Every route needs ``Authorization: Bearer <HUIMAGES_UPLOAD_TOKEN>``: reading
too, because the document carries references, file names and types that the
public image URLs do not reveal (the title is already public, in the URL's
name part). Without a configured token the API answers 404 "disabled" to
everything, so an unconfigured server never accepts writes.

Uploads are read by uploads.py (the limits the browse form has too) and
stored by ``ImageStore.save``, so the limits are exactly those of the direct
path (``HUIMAGES_MAX_UPLOAD_BYTES``, ``HUIMAGES_MAX_PIXELS``). The size limit
is checked from Content-Length before a byte of the body is read, and while
reading a chunked body. Answers are JSON, errors ``{"error": ..., "status":
...}``; bad input is always a 4xx, never a 500.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from webob import Request, Response

from ..core.config import Config
from ..core.errors import HuImagesError, RequestRefused
from ..core.ids import validate_id
from ..node.status import purge_bound
from ..store.finding import find_images, tag_counts
from ..store.focus import set_focus
from ..store.imagestore import ImageStore
from ..store.metadata import checked_focus
from .auth import bearer_token, token_ok, trusted, uploads_enabled
from .responses import guarded, json_response
from .uploads import (
    JSON_LIMIT,
    check_encodable,
    int_field,
    json_object,
    query_fields,
    read_body,
    read_form,
    references_field,
    tags_field,
    text_field,
    timestamp_field,
    upload_metadata,
)

UPLOAD_FIELDS = frozenset({"title", "type", "references", "filename", "timestamp", "tags"})
PATCH_FIELDS = frozenset({"title", "type", "references", "timestamp", "tags", "focus"})
RAW_TYPES = ("image/", "application/octet-stream")
ITEM_METHODS = ("GET", "HEAD", "PATCH", "DELETE")
WALK = ("next", "previous")


def error_response(exc: HuImagesError, detail: bool = False) -> Response:
    """The JSON error; ``detail``: for the token's holder or this machine, the whole message
    (a backend's error too), else what any client may read (``client_message``)."""
    headers = dict(getattr(exc, "headers", {}))
    message = str(exc) if detail else exc.client_message()
    return json_response(exc.status, {"error": message, "status": exc.status}, headers)


class ApiApp:
    """The write (and metadata) API for one store; a WSGI application."""

    def __init__(self, store: ImageStore) -> None:
        self.store = store

    @property
    def config(self) -> Config:
        return self.store.config

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        response = guarded(
            lambda: self.route(request),
            lambda exc: error_response(exc, trusted(self.config, environ)),
            lambda: f"{request.method} {request.script_name}{_path(environ)!r}",
        )
        return response(environ, start_response)

    # -- routing -------------------------------------------------------------

    def route(self, request: Request) -> Response:
        if not uploads_enabled(self.config):
            raise RequestRefused(
                404, "the HTTP API is disabled here: no HUIMAGES_UPLOAD_TOKEN is set"
            )
        parts = _path(request.environ).strip("/").split("/")
        if parts == ["images"]:
            self.allow(request, ("GET", "HEAD", "POST"))
            if request.method != "POST":
                return json_response(200, {"ids": self.find(request)})
            return self.upload(request)
        if parts == ["tags"]:
            self.allow(request, ("GET", "HEAD"))
            limit = int_field(request.GET.get("limit"), "limit", 100)
            return json_response(200, {"tags": tag_counts(self.store.catalog, limit)})
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
        raise RequestRefused(
            404, "no such API resource: use /_api/images, /_api/images/<ID>[/next|/previous],"
            " /_api/tags or /_api/random"
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
            raise RequestRefused(
                405, f"this method is not allowed here: use {', '.join(methods)}",
                {"Allow": ", ".join(methods)},
            )
        presented = bearer_token(request.environ)
        if presented is None:
            raise RequestRefused(
                401, "missing bearer token: send 'Authorization: Bearer <HUIMAGES_UPLOAD_TOKEN>'",
                {"WWW-Authenticate": 'Bearer realm="huimages"'},
            )
        if not token_ok(self.config, presented):
            raise RequestRefused(403, "wrong bearer token")

    # -- handlers ------------------------------------------------------------

    def upload(self, request: Request) -> Response:
        """201 for a new image, 200 when the same bytes were stored before (metadata merged)."""
        media_type = (request.content_type or "").lower()
        limit = self.config.max_upload_bytes
        fields = query_fields(request.environ)
        if media_type == "multipart/form-data":
            form_data, form = read_form(request.environ, limit)
            data = form_data or b""  # strict: there is a file
            fields.update(form)
        elif media_type.startswith(RAW_TYPES):
            data = read_body(request.environ, limit)
        else:
            raise RequestRefused(
                415, "send the image as the body with Content-Type: image/jpeg, or as"
                " multipart/form-data field 'file'",
            )
        unknown = set(fields) - UPLOAD_FIELDS
        if unknown:
            raise RequestRefused(
                400, f"unknown field(s) {sorted(unknown)}; use {sorted(UPLOAD_FIELDS)}"
            )
        saved = self.store.save(data, **upload_metadata(fields))
        location = f"{request.script_name}/images/{saved.imageid}"
        status = 201 if saved.new else 200
        return json_response(status, self.summary(saved.imageid), {"Location": location})

    def patch(self, request: Request, imageid: str) -> Response:
        if (request.content_type or "").lower() != "application/json":
            raise RequestRefused(415, "send the changes as Content-Type: application/json")
        changes = json_object(read_body(request.environ, JSON_LIMIT, what="JSON body"))
        unknown = set(changes) - PATCH_FIELDS
        if unknown:
            raise RequestRefused(
                400, f"unknown field(s) {sorted(unknown)}; use {sorted(PATCH_FIELDS)}"
            )
        point = changes.get("focus")  # [x, y] or null (cleared); checked before any write
        if "focus" in changes and point is not None:
            if not (isinstance(point, list) and len(point) == 2):
                raise RequestRefused(400, "focus must be [x, y] (fractions, 0 to 1) or null")
            checked_focus(*point)
        references = changes.get("references")
        doc = self.store.update_metadata(
            imageid,
            title=text_field(changes, "title"),
            references=references_field(references) if references is not None else None,
            typ=text_field(changes, "type"),
            timestamp=timestamp_field(text_field(changes, "timestamp") or None),
            tags=tags_field(changes.get("tags")),
        )
        if "focus" in changes:
            doc = set_focus(self.store, imageid, *(point or (None, None)))
        return json_response(200, doc)

    def find(self, request: Request) -> list[str]:
        """``GET /_api/images?reference.<name>=<value>&type=&tag=&limit=``: the IDs."""
        references, criteria = {}, {"typ": None, "tag": None}
        for key, value in request.GET.items():
            check_encodable(key, "a query parameter")
            check_encodable(value, key)
            if key.startswith("reference.") and len(key) > len("reference."):
                references[key[len("reference."):]] = value
            elif key in ("type", "tag"):
                criteria["typ" if key == "type" else "tag"] = value
            elif key != "limit":
                raise RequestRefused(400, f"unknown parameter {key!r}: use reference.<name>,"
                                          " type, tag and limit")
        limit = int_field(request.GET.get("limit"), "limit", 100)
        return find_images(self.store.catalog, references, limit=limit, **criteria)

    def summary(self, imageid: str) -> dict[str, Any]:
        """What an uploader needs next: the ID, the dimensions and ready-made URLs."""
        doc = self.store.get_imagedoc(imageid)  # the one catalog read of the answer
        links = self.store.links.reading(doc)
        urls = {"o": links.imageurl(imageid)}
        for name in self.config.presets:
            try:
                urls[name] = links.scaled_imageurl(imageid, name)
            except HuImagesError:  # a preset outside HUIMAGES_ALLOWED_SIZES has no URL
                continue
        return {
            "id": imageid,
            "width": doc.get("width"),
            "height": doc.get("height"),
            "length": doc.get("length"),
            "urls": urls,
        }



def _path(environ: dict[str, Any]) -> str:
    """PATH_INFO as the server gave it (WebOb's ``path_info`` raises on non-UTF-8 bytes)."""
    return environ.get("PATH_INFO", "")


def deletion_answer(imageid: str, removed: int, config: Config) -> dict[str, Any]:
    """The body of ``DELETE /_api/images/<ID>`` (and what ``huimages delete`` prints)."""
    bound = purge_bound(config)
    return {
        "id": imageid,
        "deleted": True,
        "store": "the original and its previews are removed; the catalog marks the image deleted",
        "this_node_cache": {"purged": True, "files_removed": removed},
        "other_nodes": (
            f"each node's follower purges its cached copies as it reads the change; within"
            f" {bound:g} s on every node whose /_health is ok (see docs/cluster.md)"
        ),
        "other_nodes_within_seconds": bound,
    }
