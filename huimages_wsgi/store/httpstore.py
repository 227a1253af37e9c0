"""``HttpImageStore``: the client library over a server's HTTP API instead of the backends.

With ``HUIMAGES_API_URL`` (and ``HUIMAGES_UPLOAD_TOKEN``) set, ``open_store``
(store/__init__.py) returns an :class:`HttpImageStore`: a store whose writes are
``POST``/``PATCH``/``DELETE`` on ``/_api/images`` and whose metadata reads
are ``GET /_api/images/<ID>`` (stdlib ``urllib``, nothing to install), so an
application needs neither S3 nor CouchDB credentials, only the token. URL
building (``imageurl``, ``scaled_imageurl``, signatures) stays local and
pure, exactly as with direct access; ``scaled_imagedata`` fetches the
variant from the server; ``get_random_imageid``, ``get_next_imageid`` and
``get_previous_imageid`` ask the API. Listing the whole catalog has no API
and raises :class:`NotAvailableRemotely`.

Errors arrive as the same exception classes the local store raises
(``ImageNotFound``, ``InvalidImage``, ``ImageTooLarge``,
``BackendUnavailable`` when the server cannot be reached ...). Redirects are
never followed: a 3xx is a ``RemoteError`` naming its ``Location``, so the
token goes to ``HUIMAGES_API_URL`` and nowhere else, and an upload is never
turned into a GET.
"""

from __future__ import annotations

import datetime
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from ..core.config import Config
from ..core.errors import (
    BackendUnavailable,
    HuImagesError,
    ImageNotFound,
    ImageTooLarge,
    InvalidImage,
    SignatureError,
)
from ..core.ids import validate_id
from ..core.signing import sign
from ..core.urls import image_path
from ..storage import Catalog, Doc
from ..storage.base import Mutation
from .basestore import BaseImageStore, Saved, checked_upload
from .metadata import as_timestamp

#: How long a fetched document is reused: ``scaled_tag`` needs it three times.
DOC_TTL = 5.0
_ERRORS: dict[int, type[HuImagesError]] = {
    404: ImageNotFound,
    413: ImageTooLarge,
    415: InvalidImage,
    503: BackendUnavailable,
}


class NotAvailableRemotely(HuImagesError, NotImplementedError):
    """The operation needs direct backend access; the HTTP API does not offer it."""

    status = 501


class RemoteError(HuImagesError):
    """The server refused the request (a status without a more specific class)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Hand every 3xx back as an HTTPError instead of following it elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


#: http(s) only (the scheme is checked in ApiClient), and no redirect is followed.
_OPENER = urllib.request.build_opener(_NoRedirects)


class ApiClient:
    """JSON over HTTP to one server's ``/_api``, with the bearer token on every request."""

    def __init__(self, base_url: str, token: str, timeout: float = 10.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"HUIMAGES_API_URL must be an http(s) URL, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        api: bool = True,
    ) -> tuple[int, bytes]:
        """Status and body of a 2xx answer; any other answer raises the matching error."""
        url = self.base_url + ("/_api" if api else "") + path
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        # the scheme is checked in __init__: http(s) only, no file:// or custom openers
        request = urllib.request.Request(url, data=body, headers=headers, method=method)  # noqa: S310
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            if 300 <= error.code < 400:
                error.close()
                raise RemoteError(error.code, (
                    f"{method} {url}: the server redirects ({error.code}) to"
                    f" {error.headers.get('Location')!r}; the client follows no redirect (the"
                    " token goes to HUIMAGES_API_URL only): set HUIMAGES_API_URL to the"
                    " server's own address")) from None
            raise _error_from(error.code, error.read(), url) from None
        except (urllib.error.URLError, OSError) as exc:
            raise BackendUnavailable(f"huimages API at {self.base_url}: {exc}") from exc

    def json(self, method: str, path: str, payload: Any = None, **options: Any) -> Any:
        if payload is not None:
            options.update(body=json.dumps(payload).encode(), content_type="application/json")
        status, body = self.call(method, path, **options)
        return json.loads(body) if body and status != 204 else None


def _error_from(status: int, body: bytes, url: str) -> HuImagesError:
    try:
        message = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        message = body.decode("utf-8", "replace").strip()[:200] or f"HTTP {status}"
    if status in (401, 403):
        return RemoteError(status, f"{url}: {message} (check HUIMAGES_UPLOAD_TOKEN)")
    if status in _ERRORS:
        return _ERRORS[status](message)
    return RemoteError(status, message)


class HttpCatalog(Catalog):
    """Read-only catalog over ``GET /_api/images/<ID>``, remembering documents briefly."""

    def __init__(self, client: ApiClient, ttl: float = DOC_TTL) -> None:
        self.client = client
        self.ttl = ttl
        self._docs: dict[str, tuple[float, Doc | None]] = {}
        self._lock = threading.Lock()

    def get(self, imageid: str) -> Doc | None:
        now = time.monotonic()
        with self._lock:
            cached = self._docs.get(imageid)
        if cached and now - cached[0] < self.ttl:
            return cached[1]
        try:
            doc = self.client.json("GET", f"/images/{validate_id(imageid)}")
        except ImageNotFound:
            doc = None
        self.remember(imageid, doc)
        return doc

    def remember(self, imageid: str, doc: Doc | None) -> None:
        with self._lock:
            if len(self._docs) > 1000:
                self._docs.clear()
            self._docs[imageid] = (time.monotonic(), doc)

    def forget(self, imageid: str) -> None:
        with self._lock:
            self._docs.pop(imageid, None)

    def update(self, imageid: str, mutate: Mutation) -> Doc:
        raise NotAvailableRemotely("documents change through the API's PATCH, not directly")

    def next_id(self, imageid: str) -> str | None:
        return self.client.json("GET", f"/images/{validate_id(imageid)}/next")["id"]

    def previous_id(self, imageid: str) -> str | None:
        return self.client.json("GET", f"/images/{validate_id(imageid)}/previous")["id"]

    def random_id(self) -> str | None:
        return self.client.json("GET", "/random")["id"]

    def ids(self, include_deleted: bool = False) -> Iterator[str]:
        raise NotAvailableRemotely("walking the catalog needs direct backend access")

    def recent_ids(self, limit: int) -> list[str]:
        raise NotAvailableRemotely("walking the catalog needs direct backend access")

    def find(self, kind: str, name: str, value: str, limit: int) -> list[str]:
        field = f"reference.{name}" if kind == "reference" else kind
        query = urlencode({field: value, "limit": limit})
        return list(self.client.json("GET", f"/images?{query}")["ids"])

    def tag_counts(self, limit: int) -> list[tuple[str, int]]:
        tags = self.client.json("GET", f"/tags?{urlencode({'limit': limit})}")["tags"]
        return [(str(tag), int(count)) for tag, count in tags]

    def describe(self) -> str:
        return f"api:{self.client.base_url}"


class HttpImageStore(BaseImageStore):
    """A store whose reads and writes go to a huimages server's HTTP API.

    No blob store, engine or renderer here: uploads are validated and
    variants rendered by the server, with its limits. ``max_upload_bytes``
    is also checked here first, so an oversized upload fails before sending
    megabytes the server would refuse. URLs and tags are built locally,
    exactly as by the server (``BaseImageStore``).
    """

    def __init__(self, config: Config, client: ApiClient | None = None) -> None:
        if not config.api_url:
            raise ValueError("HttpImageStore needs HUIMAGES_API_URL")
        if not config.upload_token and client is None:
            raise ValueError("HUIMAGES_API_URL needs HUIMAGES_UPLOAD_TOKEN (the server's token)")
        self.api = client or ApiClient(
            config.api_url, config.upload_token or "", config.backend_timeout
        )
        self.catalog: HttpCatalog
        super().__init__(config, HttpCatalog(self.api))

    def save(
        self,
        imagedata: bytes,
        timestamp: datetime.datetime | str | None = None,
        title: str = "",
        references: Mapping[str, Any] | None = None,
        filename: str = "image.jpeg",
        typ: str = "",
        tags: Sequence[str] = (),
    ) -> Saved:
        """POST the bytes; the server answers 201 for a new image, 200 for a known one."""
        imagedata = checked_upload(imagedata, self.config.max_upload_bytes)  # before sending
        fields = {"title": title, "type": typ, "filename": filename}
        if references:
            fields["references"] = json.dumps(dict(references))
        if tags:
            fields["tags"] = json.dumps(list(tags))
        if timestamp is not None:
            fields["timestamp"] = as_timestamp(timestamp)
        query = urlencode({key: value for key, value in fields.items() if value})
        status, body = self.api.call(
            "POST", f"/images?{query}", body=imagedata, content_type="application/octet-stream"
        )
        imageid = validate_id(json.loads(body)["id"])
        self.catalog.forget(imageid)
        return Saved(imageid, new=status == 201)

    def update_metadata(
        self,
        imageid: str,
        title: str = "",
        references: Mapping[str, Any] | None = None,
        typ: str = "",
        *,
        timestamp: datetime.datetime | str | None = None,
        tags: Sequence[str] = (),
    ) -> Doc:
        changes: dict[str, Any] = {"title": title, "type": typ}
        if tags:
            changes["tags"] = list(tags)
        if references:
            changes["references"] = dict(references)
        if timestamp is not None:
            changes["timestamp"] = as_timestamp(timestamp)
        doc = self.api.json("PATCH", f"/images/{validate_id(imageid)}", changes)
        self.catalog.remember(imageid, doc)
        return doc

    def set_focus(self, imageid: str, point: list[float] | None) -> Doc:
        """PATCH the focus (focus.py checks it); the server purges what depends on it."""
        doc = self.api.json("PATCH", f"/images/{validate_id(imageid)}", {"focus": point})
        self.catalog.remember(imageid, doc)
        return doc

    def delete_image(self, imageid: str) -> Any:
        """The server's answer: what it removed, and when the other nodes follow."""
        answer = self.api.json("DELETE", f"/images/{validate_id(imageid)}")
        self.catalog.forget(imageid)
        return answer

    def scaled_imagedata(self, imageid: str, size: str = "150x150", ext: str = "jpeg") -> bytes:
        """The variant as the server renders it (its cache, its engine)."""
        parsed = self.size_for(size)
        ext = self.links.served_ext(validate_id(imageid), parsed, ext)
        secret = self.config.secret
        signature = sign(secret, parsed.name, validate_id(imageid), ext) if secret else ""
        path = image_path(imageid, parsed.name, ext, "", signature)
        try:
            return self.api.call("GET", path, api=False)[1]
        except RemoteError as exc:
            if exc.status == 403:
                raise SignatureError(str(exc)) from None
            raise

    def variant_path(self, imageid: str, size: Any, ext: str = "jpeg") -> Any:
        raise NotAvailableRemotely("variants are rendered by the server: use scaled_imagedata")
