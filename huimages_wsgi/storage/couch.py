"""The catalog in CouchDB, compatible with existing huImages databases.

Documents keep the original shape (``ctime``, ``mtime``, ``title`` list,
``references`` dict of lists, ``types``, ``width``, ``height``, ``deleted``,
``_attachments`` for the oldest originals). The views browsing needs live in
``_design/huimages`` and are (re)installed when their version changes.
Writes use CouchDB's optimistic concurrency: on a conflict the mutation is
re-applied to the fresh document, so two servers never lose each other's
changes.

The change feed (``changes``) is CouchDB's ``_changes?feed=continuous`` with
a heartbeat, read line by line over its own connection so that a heartbeat
(an empty line) proves the feed alive; sequences are kept opaque (numbers in
CouchDB 1.x and PouchDB, strings in 2.x and later). A ``_local`` document
names the database, so a follower notices one that was dropped and made
again (its checkpoint then means nothing); PouchDB answers any ``since``
without complaint, so one ahead of ``update_seq`` is refused here too.
"""

from __future__ import annotations

import base64
import http.client
import json
import random
import shutil
import socket
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import couchdb
import couchdb.http

from ..core.errors import BackendUnavailable
from ..core.ids import validate_id
from ..core.observe import timed
from .base import (
    BlobNotFound,
    BlobStore,
    Catalog,
    Change,
    ChangesGone,
    Doc,
    Mutation,
    Seq,
    is_live,
    recorded_size,
    seq_number,
)
from .couchviews import DESIGN, DESIGN_ID, TERMS, TERMS_ID

_CONFLICT_RETRIES = 20
_NETWORK_ERRORS = (OSError, socket.timeout, http.client.HTTPException, couchdb.http.ServerError)
_REFUSED = (couchdb.http.Unauthorized, couchdb.http.Forbidden)
#: Everything that means "CouchDB cannot serve us now", answered as a 503, not a 500.
_BACKEND_ERRORS = (*_NETWORK_ERRORS, *_REFUSED, couchdb.http.ResourceNotFound)
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
IDENTITY_ID = "_local/huimages-catalog"


class CouchCatalog(Catalog):
    def __init__(self, url: str, dbname: str = "huimages", timeout: float = 10.0) -> None:
        self.url = url
        self.dbname = dbname
        session = couchdb.http.Session(timeout=timeout, retry_delays=[0.2])
        self.server = couchdb.Server(url, session=session)
        self._db: couchdb.Database | None = None
        self._lock = threading.Lock()

    @property
    def db(self) -> couchdb.Database:
        """Connect (and create the database and views) on first use, not at import."""
        if self._db is not None:
            return self._db
        with self._lock:
            if self._db is None:
                try:
                    try:
                        db = self.server[self.dbname]
                    except couchdb.http.ResourceNotFound:
                        try:
                            db = self.server.create(self.dbname)
                        except couchdb.http.PreconditionFailed:  # created concurrently
                            db = self.server[self.dbname]
                    self._install_design(db)
                except _BACKEND_ERRORS as exc:
                    raise self._unavailable(exc) from exc
                self._db = db
        return self._db

    @staticmethod
    def _install_design(db: couchdb.Database) -> None:
        """Each design document at its version or later (an older process never writes
        an earlier one back over a newer one)."""
        for design_id, design in ((DESIGN_ID, DESIGN), (TERMS_ID, TERMS)):
            for _ in range(_CONFLICT_RETRIES):
                current = db.get(design_id) or {"_id": design_id}
                if int(current.get("version") or 0) >= design["version"]:
                    break
                current.update(design)
                try:
                    db.save(current)
                    break
                except couchdb.http.ResourceConflict:
                    continue

    def _guard(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except _BACKEND_ERRORS as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: Exception) -> BackendUnavailable:
        """Name the problem, but neither the URL (it may hold the password) nor the database.

        The message reaches HTTP clients, in the 503. A 404 means the database
        or its design document was deleted under us; forgetting the handle
        makes the next request create them again.
        """
        if isinstance(exc, _REFUSED):
            status = 401 if isinstance(exc, couchdb.http.Unauthorized) else 403
            return BackendUnavailable(
                f"CouchDB refused access (HTTP {status}): check the user name and password"
                " in HUIMAGESCOUCHSERVER and their rights on the database"
            )
        if isinstance(exc, couchdb.http.ResourceNotFound):
            self._db = None
            return BackendUnavailable("CouchDB database or its views are missing (HTTP 404)")
        return BackendUnavailable(f"CouchDB unreachable: {exc}")

    @timed("couchdb", "get")
    def get(self, imageid: str) -> Doc | None:
        doc = self._guard(self.db.get, validate_id(imageid))
        return dict(doc) if doc is not None else None

    @timed("couchdb", "update")
    def update(self, imageid: str, mutate: Mutation) -> Doc:
        validate_id(imageid)
        for _ in range(_CONFLICT_RETRIES):
            current = self._guard(self.db.get, imageid)
            doc: Doc = dict(current) if current is not None else {"_id": imageid}
            mutate(doc)
            doc["_id"] = imageid
            try:
                self._guard(self.db.save, doc)
                return doc
            except couchdb.http.ResourceConflict:
                continue
        raise BackendUnavailable(f"too many concurrent updates of {imageid}; try again")

    def _view_ids(self, name: str, **options: Any) -> list[str]:
        rows = self._guard(lambda: list(self.db.view(name, **options)))
        return [row.id for row in rows]

    def _neighbour(self, imageid: str, descending: bool) -> str | None:
        ids = self._view_ids("huimages/live", startkey=validate_id(imageid), limit=2,
                             descending=descending)
        following = [other for other in ids if other != imageid]
        return following[0] if following else None

    @timed("couchdb", "find")
    def find(self, kind: str, name: str, value: str, limit: int) -> list[str]:
        return self._view_ids("huimages_terms/terms", reduce=False, descending=True, limit=limit,
                              startkey=[kind, name, value, {}], endkey=[kind, name, value])

    @timed("couchdb", "tag_counts")
    def tag_counts(self, limit: int) -> list[tuple[str, int]]:
        rows = self._guard(lambda: list(self.db.view(
            "huimages_terms/terms", group_level=3, startkey=["tag", ""], endkey=["tag", "", {}])))
        counts = sorted(((str(row.key[2]), int(row.value)) for row in rows),
                        key=lambda item: (-item[1], item[0]))
        return counts[:limit]

    @timed("couchdb", "next_id")
    def next_id(self, imageid: str) -> str | None:
        return self._neighbour(imageid, descending=False)

    @timed("couchdb", "previous_id")
    def previous_id(self, imageid: str) -> str | None:
        return self._neighbour(imageid, descending=True)

    @timed("couchdb", "random_id")
    def random_id(self) -> str | None:
        start = "".join(random.choice(_ALPHABET) for _ in range(8))
        ids = self._view_ids("huimages/live", startkey=start, limit=1) or self._view_ids(
            "huimages/live", limit=1
        )
        return ids[0] if ids else None

    def ids(self, include_deleted: bool = False) -> Iterator[str]:
        name = "_all_docs" if include_deleted else "huimages/live"
        rows = self._guard(lambda: list(self.db.iterview(name, 500)))
        for row in rows:
            if not row.id.startswith("_design/"):
                yield row.id

    @timed("couchdb", "recent_ids")
    def recent_ids(self, limit: int) -> list[str]:
        return self._view_ids("huimages/recent", descending=True, limit=limit)

    @timed("couchdb", "check")
    def check(self) -> None:
        self._guard(self.db.info)

    # -- the change feed ---------------------------------------------------------

    def identity(self) -> str:
        """A random name kept in a ``_local`` document (never replicated, never in _changes)."""
        for _ in range(_CONFLICT_RETRIES):
            doc = self._guard(self.db.get, IDENTITY_ID)
            if doc is not None and doc.get("uuid"):
                return str(doc["uuid"])
            try:
                self._guard(self.db.save, {"_id": IDENTITY_ID, "uuid": uuid.uuid4().hex})
            except couchdb.http.ResourceConflict:
                continue
        raise BackendUnavailable("cannot name the CouchDB catalog; try again")

    @timed("couchdb", "update_seq")
    def update_seq(self) -> Seq:
        return self._guard(self.db.info)["update_seq"]

    def changes(self, since: Seq, timeout: float, heartbeat: float) -> Iterator[Change | None]:
        if seq_number(since) > seq_number(self.update_seq()):
            raise ChangesGone("the checkpoint is ahead of the database (was it made again?)")
        query = urllib.parse.urlencode({
            "feed": "continuous",
            "heartbeat": max(100, int(heartbeat * 1000)),
            "include_docs": "true",
            "since": since if isinstance(since, str) else json.dumps(since),
        })
        parts = urllib.parse.urlsplit(self.url)
        connection_class = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        # a silent socket for three heartbeats means a dead feed: reconnect
        conn = connection_class(parts.hostname or "127.0.0.1", parts.port,
                                timeout=3 * heartbeat + 5)
        headers = {"Accept": "application/json"}
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        path = f"{parts.path.rstrip('/')}/{urllib.parse.quote(self.dbname, safe='')}/_changes"
        deadline = time.monotonic() + timeout
        try:
            try:
                conn.request("GET", f"{path}?{query}", headers=headers)
                response = conn.getresponse()
            except _NETWORK_ERRORS as exc:
                raise self._unavailable(exc) from exc
            if response.status == 400:
                raise ChangesGone(f"CouchDB cannot continue from {since!r}: "
                                  f"{response.read(300).decode(errors='replace')}")
            if response.status != 200:
                raise BackendUnavailable(f"CouchDB change feed answered HTTP {response.status}")
            while time.monotonic() < deadline:
                try:
                    line = response.readline()
                except _NETWORK_ERRORS as exc:
                    raise self._unavailable(exc) from exc
                if not line:
                    return  # the server ended the feed: the caller reconnects
                if not line.strip():
                    yield None  # heartbeat
                    continue
                row = json.loads(line)
                if "last_seq" in row and "id" not in row:
                    return
                if "error" in row:
                    raise BackendUnavailable(f"CouchDB change feed: {row.get('reason', row)}")
                doc = row.get("doc")
                if row.get("deleted") or (doc or {}).get("_deleted"):
                    doc = None
                yield Change(row["seq"], str(row["id"]), doc)
        finally:
            conn.close()

    @timed("couchdb", "live_ids")
    def live_ids(self, imageids: Iterable[str]) -> set[str]:
        wanted = list(imageids)
        live: set[str] = set()
        for start in range(0, len(wanted), 200):
            chunk = wanted[start:start + 200]
            rows = self._guard(
                lambda chunk=chunk: list(self.db.view("_all_docs", keys=chunk, include_docs=True))
            )
            live.update(row.id for row in rows if row.id and is_live(row.doc))
        return live

    def attachments(self) -> CouchAttachmentStore:
        return CouchAttachmentStore(self)

    def describe(self) -> str:
        base = self.url.split("@")[-1]  # never print credentials
        return f"couchdb:{base}/{self.dbname}"


class CouchAttachmentStore(BlobStore):
    """Originals kept as attachments on the catalog document (huImages' first design).

    It keeps no previews (``put_derived`` says so by returning False), so an
    image stored only here renders from its original, as it always did.
    """

    def __init__(self, catalog: CouchCatalog) -> None:
        self.catalog = catalog

    def _attachment_name(self, imageid: str) -> str | None:
        doc = self.catalog.get(imageid)
        attachments = (doc or {}).get("_attachments") or {}
        return next(iter(attachments), None)

    @timed("couchdb", "attachment_put")
    def put(self, imageid: str, data: bytes, content_type: str, width: int, height: int) -> None:
        """Attach to the catalog document, creating it first: attachments need a revision."""
        guard, db = self.catalog._guard, self.catalog.db
        validate_id(imageid)
        for _ in range(_CONFLICT_RETRIES):
            doc = guard(db.get, imageid) or {"_id": imageid}
            try:
                if "_rev" not in doc:
                    guard(db.save, doc)
                guard(db.put_attachment, doc, data, "image.jpeg", content_type)
                return
            except couchdb.http.ResourceConflict:
                continue
        raise BackendUnavailable(f"too many concurrent updates of {imageid}; try again")

    @timed("couchdb", "attachment_open")
    def open(self, imageid: str) -> BinaryIO:
        name = self._attachment_name(validate_id(imageid))
        if name is None:
            raise BlobNotFound(f"no attachment on {imageid}")
        spool = tempfile.TemporaryFile()  # noqa: SIM115 - returned to the caller
        try:
            body = self.catalog._guard(self.catalog.db.get_attachment, imageid, name)
            if body is None:
                raise BlobNotFound(f"attachment of {imageid} vanished")
            try:  # couchdb's ResponseBody is no context manager
                shutil.copyfileobj(body, spool, 1 << 20)
            finally:
                body.close()
        except _NETWORK_ERRORS as exc:
            spool.close()
            raise BackendUnavailable(f"CouchDB attachment read failed: {exc}") from exc
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return spool  # type: ignore[return-value]

    @timed("couchdb", "attachment_exists")
    def exists(self, imageid: str) -> bool:
        return self._attachment_name(validate_id(imageid)) is not None

    @timed("couchdb", "attachment_dimensions")
    def dimensions(self, imageid: str) -> tuple[int, int]:
        """The size the document records, so a copy elsewhere can carry it; 0 if unknown."""
        return recorded_size(self.catalog.get(imageid))

    @timed("couchdb", "attachment_delete")
    def delete(self, imageid: str) -> None:
        """Attachments are left in place: they are the legacy copy of record."""

    def describe(self) -> str:
        return f"{self.catalog.describe()} (attachments)"
