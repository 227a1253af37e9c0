"""The embedded catalog: one SQLite file, documents stored as JSON.

The whole document is kept as JSON (same shape as in CouchDB) with a few
columns pulled out for the queries browsing needs. WAL mode lets the
readers in several gunicorn workers run while one writes; ``BEGIN
IMMEDIATE`` makes read-modify-write atomic across processes.

``synchronous=FULL``: in WAL mode, NORMAL syncs the log only at checkpoints,
so a power cut may roll back the last commits, i.e. acknowledged uploads.
FULL syncs the log at every commit; bench/durability.py measures the cost.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from ..errors import BackendUnavailable
from ..ids import validate_id
from .base import Catalog, Doc, Mutation, is_live

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id      TEXT PRIMARY KEY,
    doc     TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    ctime   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS images_live ON images (deleted, id);
CREATE INDEX IF NOT EXISTS images_recent ON images (deleted, ctime);
"""


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
        with self._connection() as conn:
            conn.executescript(_SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        """One connection per thread and process: sqlite3 objects are not shareable."""
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")  # one of SYNCHRONOUS_LEVELS
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            return self._connection().execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            raise BackendUnavailable(f"catalog database: {exc}") from exc

    def get(self, imageid: str) -> Doc | None:
        rows = self._query("SELECT doc FROM images WHERE id = ?", (validate_id(imageid),))
        if not rows:
            return None
        doc = json.loads(rows[0][0])
        doc["_id"] = imageid
        return doc

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

    def next_id(self, imageid: str) -> str | None:
        return self._neighbour(imageid, ">", "ASC")

    def previous_id(self, imageid: str) -> str | None:
        return self._neighbour(imageid, "<", "DESC")

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

    def recent_ids(self, limit: int) -> list[str]:
        rows = self._query(
            "SELECT id FROM images WHERE deleted = 0 ORDER BY ctime DESC, id LIMIT ?", (limit,)
        )
        return [row[0] for row in rows]

    def check(self) -> None:
        self._query("SELECT 1")

    def describe(self) -> str:
        return f"sqlite:{self.path}"
