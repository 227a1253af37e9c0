"""Purging a deleted image from the shared caches in front (Varnish, a CDN), until they say yes.

Usage::

    purges = SharedPurges(config, follower_dir(config) / "purges.sqlite3")
    purges.add(imageid)      # the follower saw it deleted (or its bytes change)
    purges.send_due()        # each target asked once; a refusal is asked again later

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
cache that is down, or a node that restarts, loses none: each is asked again
after 1, 2, 4 ... up to 300 seconds until it answers 2xx. Counts go to the
follower's state and from there to ``/_metrics``. Nothing here ever deletes
an image or a cached file; a purge only makes a cache ask again.
"""

from __future__ import annotations

import http.client
import json
import logging
import sqlite3
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from ..core.config import Config

log = logging.getLogger("huimages_wsgi")

#: Seconds one request to a cache may take.
TIMEOUT = 3.0
#: The longest wait between two tries of one purge.
MAX_BACKOFF = 300.0
#: Purges tried in one round (the rest wait for the next).
BATCH = 50


class Target:
    """One shared cache of HUIMAGES_PURGE and how it is asked to drop an image."""

    def __init__(self, text: str, token: str | None = None) -> None:
        self.text = text
        kind, plus, rest = text.partition("+")
        self.kind = kind if plus else "webhook"
        self.url = urllib.parse.urlsplit(rest if plus else text)
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
        """Ask once; OSError or http.client.HTTPException when the cache did not say 2xx."""
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
    """The purges still owed to the shared caches, kept on disk, sent with a backoff."""

    def __init__(
        self, config: Config, path: Path, clock: Callable[[], float] = time.time
    ) -> None:
        self.targets = [Target(text, config.purge_token) for text in config.purge]
        self.path, self.clock = path, clock
        self.sent_total = self.failed_total = 0
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS owed (target TEXT, imageid TEXT, due REAL,"
                       " tries INTEGER, PRIMARY KEY (target, imageid))")
            self._db = db
        return self._db

    def add(self, imageid: str) -> None:
        """Owe every target a purge of ``imageid``, due now (once, however often added)."""
        if not self.targets:
            return
        now = self.clock()
        with self.db:
            self.db.executemany(
                "INSERT INTO owed VALUES (?, ?, ?, 0) ON CONFLICT (target, imageid)"
                " DO UPDATE SET due = MIN(due, excluded.due)",
                [(target.text, imageid, now) for target in self.targets])

    def pending(self) -> int:
        if not self.targets:
            return 0
        return int(self.db.execute("SELECT COUNT(*) FROM owed").fetchone()[0])

    def send_due(self) -> int:
        """Send the purges that are due; the number the caches acknowledged."""
        if not self.targets:
            return 0
        by_text = {target.text: target for target in self.targets}
        now = self.clock()
        due = self.db.execute("SELECT target, imageid, tries FROM owed WHERE due <= ?"
                              " ORDER BY due LIMIT ?", (now, BATCH)).fetchall()
        acknowledged = 0
        down: set[str] = set()  # a cache that failed once is not asked again this round
        for text, imageid, tries in due:
            target = by_text.get(text)
            if target is None:  # a target no longer configured: nobody to ask
                self.db.execute("DELETE FROM owed WHERE target = ?", (text,))
                continue
            if text in down:
                continue
            try:
                target.send(imageid)
            except (OSError, http.client.HTTPException) as exc:
                down.add(text)
                self.failed_total += 1
                wait = min(2.0 ** tries, MAX_BACKOFF)
                log.warning("purge of %s at %s failed (%s); again in %.0f s",
                            imageid, text, exc, wait)
                self.db.execute("UPDATE owed SET due = ?, tries = tries + 1"
                                " WHERE target = ? AND imageid = ?", (now + wait, text, imageid))
            else:
                acknowledged += 1
                self.db.execute("DELETE FROM owed WHERE target = ? AND imageid = ?",
                                (text, imageid))
        self.sent_total += acknowledged
        return acknowledged

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
