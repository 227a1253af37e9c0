"""The embedded catalog: one SQLite file, documents stored as JSON.

The whole document is kept as JSON (same shape as in CouchDB) with a few
columns pulled out for the queries browsing needs. WAL mode lets the
readers in several gunicorn workers run while one writes; ``BEGIN
IMMEDIATE`` makes read-modify-write atomic across processes.

``synchronous=FULL``: in WAL mode, NORMAL syncs the log only at checkpoints,
so a power cut may roll back the last commits, i.e. acknowledged uploads.
FULL syncs the log at every commit; bench/durability.py measures the cost.

Every write also appends to ``changes`` in the same transaction: the local
equivalent of CouchDB's ``_changes`` feed, which each node's follower reads
(follower.py). Only the newest ``CHANGES_KEPT`` rows are kept; ``meta``
remembers how far they were trimmed and names this catalog (``uuid``), so a
follower whose checkpoint is older, or from another catalog, reconciles.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..core.errors import BackendUnavailable
from ..core.ids import validate_id
from ..core.observe import timed
from .base import (
    Catalog,
    Change,
    ChangesGone,
    Doc,
    Mutation,
    Seq,
    is_live,
    search_terms,
    seq_number,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id      TEXT PRIMARY KEY,
    doc     TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    ctime   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS images_live ON images (deleted, id);
CREATE INDEX IF NOT EXISTS images_recent ON images (deleted, ctime);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS terms (
    kind  TEXT NOT NULL,
    name  TEXT NOT NULL,
    value TEXT NOT NULL,
    id    TEXT NOT NULL,
    PRIMARY KEY (kind, name, value, id)
);
CREATE INDEX IF NOT EXISTS terms_of_image ON terms (id);
"""
#: Rows of ``changes`` kept; a follower further behind than this reconciles.
CHANGES_KEPT = 100_000
_POLL_SECONDS = 0.2


SYNCHRONOUS_LEVELS = ("FULL", "NORMAL", "EXTRA")


class SQLiteCatalog(Catalog):
    def __init__(self, path: Path, timeout: float = 10.0, synchronous: str = "FULL") -> None:
        if synchronous not in SYNCHRONOUS_LEVELS:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_LEVELS}")
        self.path = Path(path)
        self.timeout = timeout
        self.synchronous = synchronous
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.changes_kept = CHANGES_KEPT
        with self._connection() as conn:
            conn.executescript(_SCHEMA)
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('uuid', ?)", (uuid.uuid4().hex,)
            )
        try:
            self._index_terms_once()
        except sqlite3.OperationalError as exc:
            raise BackendUnavailable(f"catalog database: {exc}") from exc

    def _index_terms_once(self) -> None:
        """Fill ``terms`` from every document of a catalog made before it existed (writers
        of an older version must be stopped first: what they write is not indexed)."""
        conn = self._connection()
        if conn.execute("SELECT 1 FROM meta WHERE key = 'terms'").fetchone():
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not conn.execute("SELECT 1 FROM meta WHERE key = 'terms'").fetchone():
                for imageid, text in conn.execute(
                        "SELECT id, doc FROM images WHERE deleted = 0").fetchall():
                    self._index_terms(conn, imageid, json.loads(text))
                conn.execute("INSERT INTO meta (key, value) VALUES ('terms', '1')")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _index_terms(conn: sqlite3.Connection, imageid: str, doc: Doc) -> None:
        conn.execute("DELETE FROM terms WHERE id = ?", (imageid,))
        conn.executemany("INSERT OR IGNORE INTO terms (kind, name, value, id) VALUES (?, ?, ?, ?)",
                         [(*term, imageid) for term in search_terms(doc)])

    def _connection(self) -> sqlite3.Connection:
        """One connection per thread and process: sqlite3 objects are not shareable."""
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            self._use_wal(conn)
            conn.execute(f"PRAGMA synchronous={self.synchronous}")  # one of SYNCHRONOUS_LEVELS
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """Switch a new database to WAL (it stays so); retried while another process does.

        Two processes opening a new catalog at once (``huimages put --jobs``)
        both ask for WAL; SQLite answers the loser "database is locked" at
        once, without waiting for its busy timeout, so wait here instead.
        """
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                    return
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise BackendUnavailable(f"catalog database: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.1)

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            return self._connection().execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            raise BackendUnavailable(f"catalog database: {exc}") from exc

    @timed("sqlite", "get")
    def get(self, imageid: str) -> Doc | None:
        rows = self._query("SELECT doc FROM images WHERE id = ?", (validate_id(imageid),))
        if not rows:
            return None
        doc = json.loads(rows[0][0])
        doc["_id"] = imageid
        return doc

    @timed("sqlite", "update")
    def update(self, imageid: str, mutate: Mutation) -> Doc:
        validate_id(imageid)
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT doc FROM images WHERE id = ?", (imageid,)).fetchone()
                doc = json.loads(row[0]) if row else {}
                mutate(doc)
                doc.pop("_id", None)
                conn.execute(
                    "INSERT OR REPLACE INTO images (id, doc, deleted, ctime) VALUES (?, ?, ?, ?)",
                    (imageid, json.dumps(doc), int(not is_live(doc)), str(doc.get("ctime", ""))),
                )
                self._index_terms(conn, imageid, doc)
                self._record_change(conn, imageid)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            raise BackendUnavailable(f"catalog database: {exc}") from exc
        doc["_id"] = imageid
        return doc

    def _neighbour(self, imageid: str, op: str, order: str) -> str | None:
        # op and order are fixed fragments chosen by the two callers below
        sql = f"SELECT id FROM images WHERE deleted = 0 AND id {op} ? ORDER BY id {order} LIMIT 1"  # noqa: S608, E501
        rows = self._query(sql, (validate_id(imageid),))
        return rows[0][0] if rows else None

    @timed("sqlite", "next_id")
    def next_id(self, imageid: str) -> str | None:
        return self._neighbour(imageid, ">", "ASC")

    @timed("sqlite", "previous_id")
    def previous_id(self, imageid: str) -> str | None:
        return self._neighbour(imageid, "<", "DESC")

    @timed("sqlite", "random_id")
    def random_id(self) -> str | None:
        start = "".join(random.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(8))
        rows = self._query(
            "SELECT id FROM images WHERE deleted = 0 AND id >= ? ORDER BY id LIMIT 1", (start,)
        ) or self._query("SELECT id FROM images WHERE deleted = 0 ORDER BY id LIMIT 1")
        return rows[0][0] if rows else None

    def ids(self, include_deleted: bool = False) -> Iterator[str]:
        highest = 1 if include_deleted else 0
        rows = self._query("SELECT id FROM images WHERE deleted <= ? ORDER BY id", (highest,))
        for (imageid,) in rows:
            yield imageid

    @timed("sqlite", "recent_ids")
    def recent_ids(self, limit: int) -> list[str]:
        rows = self._query(
            "SELECT id FROM images WHERE deleted = 0 ORDER BY ctime DESC, id LIMIT ?", (limit,)
        )
        return [row[0] for row in rows]

    @timed("sqlite", "find")
    def find(self, kind: str, name: str, value: str, limit: int) -> list[str]:
        rows = self._query(
            "SELECT t.id FROM terms t JOIN images i ON i.id = t.id WHERE t.kind = ?"
            " AND t.name = ? AND t.value = ? AND i.deleted = 0 ORDER BY i.ctime DESC, t.id"
            " LIMIT ?", (kind, name, value, limit))
        return [row[0] for row in rows]

    @timed("sqlite", "tag_counts")
    def tag_counts(self, limit: int) -> list[tuple[str, int]]:
        rows = self._query("SELECT value, COUNT(*) FROM terms WHERE kind = 'tag' GROUP BY value"
                           " ORDER BY COUNT(*) DESC, value LIMIT ?", (limit,))
        return [(str(tag), int(count)) for tag, count in rows]

    @timed("sqlite", "check")
    def check(self) -> None:
        self._query("SELECT 1")

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    # -- the change feed ---------------------------------------------------------

    def _record_change(self, conn: sqlite3.Connection, imageid: str) -> None:
        """Inside the writing transaction: append, and now and then trim the oldest."""
        seq = conn.execute("INSERT INTO changes (id) VALUES (?)", (imageid,)).lastrowid or 0
        if seq % 1000 == 0 and seq > self.changes_kept:
            cut = seq - self.changes_kept
            conn.execute("DELETE FROM changes WHERE seq <= ?", (cut,))
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('trimmed', ?)", (str(cut),)
            )

    def identity(self) -> str:
        """This catalog file's own name, made once: a new file is a new catalog."""
        rows = self._query("SELECT value FROM meta WHERE key = 'uuid'")
        return rows[0][0] if rows else ""

    @timed("sqlite", "update_seq")
    def update_seq(self) -> Seq:
        rows = self._query("SELECT seq FROM sqlite_sequence WHERE name = 'changes'")
        return f"{rows[0][0] if rows else 0}-{self.identity()}"

    def _check_since(self, since: Seq) -> int:
        """The number in ``since`` if this catalog can continue from it, else ChangesGone."""
        number = seq_number(since)
        tail = str(since).split("-", 1)[1] if "-" in str(since) else ""
        if tail != self.identity():
            raise ChangesGone("the checkpoint is from another catalog")
        rows = self._query("SELECT value FROM meta WHERE key = 'trimmed'")
        if rows and number < int(rows[0][0]):
            raise ChangesGone(f"changes up to {rows[0][0]} were trimmed; checkpoint: {number}")
        if number > seq_number(self.update_seq()):
            raise ChangesGone("the checkpoint is ahead of the catalog (a new database?)")
        return number

    def changes(self, since: Seq, timeout: float, heartbeat: float) -> Iterator[Change | None]:
        """Polls the ``changes`` table (a local file: cheap) every 0.2 s."""
        number = self._check_since(since)
        tag = self.identity()
        deadline = time.monotonic() + timeout
        beat = time.monotonic() + heartbeat
        while time.monotonic() < deadline:
            rows = self._query(
                "SELECT c.seq, c.id, i.doc FROM changes c LEFT JOIN images i ON i.id = c.id"
                " WHERE c.seq > ? ORDER BY c.seq LIMIT 500",
                (number,),
            )
            for seq, imageid, doc in rows:
                number = seq
                yield Change(f"{seq}-{tag}", imageid, json.loads(doc) if doc else None)
            if rows:
                beat = time.monotonic() + heartbeat
                continue
            if time.monotonic() >= beat:
                yield None
                beat = time.monotonic() + heartbeat
            time.sleep(_POLL_SECONDS)

    @timed("sqlite", "live_ids")
    def live_ids(self, imageids: Iterable[str]) -> set[str]:
        wanted = list(imageids)
        live: set[str] = set()
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT id FROM images WHERE deleted = 0 AND id IN ({marks})"  # noqa: S608
            live.update(row[0] for row in self._query(sql, tuple(chunk)))
        return live
