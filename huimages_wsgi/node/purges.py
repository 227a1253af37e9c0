"""Purging a deleted image from the shared caches in front (Varnish, a CDN), until they say yes.

Usage::

    purges = SharedPurges(config, follower_dir(config) / "purges.sqlite3")
    purges.start()           # the sender: a thread of its own
    purges.add(imageid)      # the follower saw it deleted (or its bytes change)
    purges.close()

Every image answer names its image in a surrogate key (responders.py), so one
request per cache drops every size, format and SEO name of an image at once.
``HUIMAGES_PURGE`` lists the caches, each in one of three forms:

``xkey+http://HOST:PORT``
    Varnish with vmod-xkey: ``PURGE /`` with ``xkey-purge: <ID>``
    (contrib/varnish/huimages.vcl answers it).
``ban+http://HOST:PORT``
    Varnish without the vmod: ``BAN /`` with ``xkey-purge: <ID>``; the VCL
    bans the objects whose ``xkey`` header is the ID.
``https://...`` (or ``http://``)
    a webhook for a CDN's API: ``POST`` of ``{"surrogate_keys": [ID]}``, with
    ``Authorization: Bearer HUIMAGES_PURGE_TOKEN`` when that is set; ``{key}``
    in the URL is replaced by the ID (``.../purge/{key}``, as Fastly's API).

A purge waits in a small SQLite file next to the follower's state, so a
cache that is down, or a node that restarts, loses none. The sender is a
thread of its own, so a slow or silent cache never holds up the follower's
own purges: it sends what is due, and a cache that failed rests (1, 2, 4 ...
up to 300 seconds) with all its purges until it is asked again. Counts go
to the follower's state and from there to ``/_metrics``. Nothing here ever
deletes an image or a cached file; a purge only makes a cache ask again.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from ..core.config import Config

log = logging.getLogger("huimages_wsgi")

#: Seconds one request to a cache may take.
TIMEOUT = 3.0
#: The longest rest of a cache that failed.
MAX_BACKOFF = 300.0
#: Purges read from the file in one round.
BATCH = 200
#: Seconds between two rounds of the sender when nothing new was added.
ROUND = 1.0


class Target:
    """One shared cache of HUIMAGES_PURGE and how it is asked to drop an image."""

    def __init__(self, text: str, token: str | None = None) -> None:
        self.text = text
        kind, plus, rest = text.partition("+")
        self.kind = kind if plus and kind in ("xkey", "ban") else "webhook"
        self.url = urllib.parse.urlsplit(rest if self.kind != "webhook" else text)
        self.token = token

    def request(self, imageid: str) -> tuple[str, str, dict[str, str], bytes]:
        """Method, path, headers and body of the purge of ``imageid``."""
        if self.kind in ("xkey", "ban"):
            return ("PURGE" if self.kind == "xkey" else "BAN", "/",
                    {"xkey-purge": imageid}, b"")
        path = urllib.parse.urlunsplit(("", "", self.url.path or "/", self.url.query, ""))
        path = path.replace("{key}", imageid).replace("%7Bkey%7D", imageid)
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return "POST", path, headers, json.dumps({"surrogate_keys": [imageid]}).encode()

    def send(self, imageid: str) -> None:
        """Ask once; an exception (of any kind) when the cache did not say 2xx."""
        method, path, headers, body = self.request(imageid)
        host, port = self.url.hostname or "", self.url.port
        connection = (http.client.HTTPSConnection(host, port, timeout=TIMEOUT)
                      if self.url.scheme == "https"
                      else http.client.HTTPConnection(host, port, timeout=TIMEOUT))
        try:
            connection.request(method, path, body=body or None, headers=headers)
            response = connection.getresponse()
            answer = response.read(300)
        finally:
            connection.close()
        if not 200 <= response.status < 300:
            raise http.client.HTTPException(
                f"{self.text} answered {response.status}: {answer[:120]!r}")


class SharedPurges:
    """The purges still owed to the shared caches, kept on disk, sent by a thread."""

    def __init__(
        self, config: Config, path: Path, clock: Callable[[], float] = time.time
    ) -> None:
        self.targets = {text: Target(text, config.purge_token) for text in config.purge}
        self.path, self.clock = path, clock
        self.sent_total = self.failed_total = 0
        self._failures: dict[str, int] = {}  # a cache's failures in a row
        self._resting: dict[str, float] = {}  # a cache that failed: not asked before then
        self._lock = threading.Lock()  # the connection, shared by the follower and the sender
        self._db: sqlite3.Connection | None = None
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    # -- the file ----------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS owed (target TEXT, imageid TEXT, due REAL,"
                       " tries INTEGER, PRIMARY KEY (target, imageid))")
            self._db = db
        return self._db

    def _execute(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        """One statement under the lock; a damaged file is set aside and started afresh
        (its purges are lost, which the log says: they only made caches ask again)."""
        with self._lock:
            try:
                db = self._connection()
                if isinstance(args, list):
                    db.executemany(sql, args)
                    return []
                return db.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as exc:
                log.error("purge file %s is damaged (%s): set aside, starting afresh",
                          self.path, exc)
                if self._db is not None:
                    self._db.close()
                    self._db = None
                try:
                    os.replace(self.path, f"{self.path}.damaged-{int(time.time())}")
                except OSError:
                    pass
                return []

    # -- the follower's side -------------------------------------------------------------

    def add(self, imageid: str) -> None:
        """Owe every target a purge of ``imageid``, due now (once, however often added)."""
        if not self.targets:
            return
        now = self.clock()
        self._execute("INSERT INTO owed VALUES (?, ?, ?, 0) ON CONFLICT (target, imageid)"
                      " DO UPDATE SET due = MIN(due, excluded.due)",
                      [(text, imageid, now) for text in self.targets])
        self._wake.set()

    def pending(self) -> int:
        if not self.targets:
            return 0
        rows = self._execute("SELECT COUNT(*) FROM owed")
        return int(rows[0][0]) if rows else 0

    def start(self) -> None:
        """Start the sender thread (none without targets)."""
        if self.targets and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="huimages-purges",
                                            daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(TIMEOUT * 2)
            self._thread = None
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- the sender ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.send_due()
            except Exception:  # the sender outlives any failure, as the follower does
                log.exception("purge sender: unexpected failure")
            self._wake.wait(ROUND)
            self._wake.clear()

    def send_due(self) -> int:
        """Send the purges that are due to caches that are not resting; the number the
        caches acknowledged."""
        if not self.targets:
            return 0
        now = self.clock()
        due = self._execute("SELECT target, imageid FROM owed WHERE due <= ?"
                            " ORDER BY due LIMIT ?", (now, BATCH))
        acknowledged = 0
        for text, imageid in due:
            target = self.targets.get(text)
            if target is None:  # a target no longer configured: nobody to ask
                self._execute("DELETE FROM owed WHERE target = ?", (text,))
                continue
            if self._resting.get(text, 0.0) > now or self._stop.is_set():
                continue
            try:
                target.send(imageid)
            except Exception as exc:  # noqa: BLE001 - whatever it is, the cache said no
                self.failed_total += 1
                failures = self._failures[text] = self._failures.get(text, 0) + 1
                wait = min(2.0 ** (failures - 1), MAX_BACKOFF)
                self._resting[text] = now + wait
                log.warning("purge of %s at %s failed (%s); that cache rests %.0f s",
                            imageid, text, exc, wait)
                self._execute("UPDATE owed SET due = ?, tries = tries + 1"
                              " WHERE target = ? AND imageid = ?", (now + wait, text, imageid))
            else:
                acknowledged += 1
                self._failures.pop(text, None)
                self._resting.pop(text, None)
                self._execute("DELETE FROM owed WHERE target = ? AND imageid = ?",
                              (text, imageid))
        self.sent_total += acknowledged
        return acknowledged
