"""The change-feed follower: keeps one node's cache coherent with the shared catalog.

Every node keeps its own cache directory, which its webserver serves without
asking Python. When an image is deleted (or marked broken, or its recorded
bytes or dimensions change) through *any* node, every other node must drop
its cached variants. Each node therefore runs one follower (inside
``huimages serve`` and ``huimages fcgi`` as a child process of the master,
or alone as ``huimages follow``) that reads the catalog's change feed
(``Catalog.changes``: CouchDB's ``_changes``, or the SQLite catalog's
``changes`` table) and purges this node's variants of the images concerned.

Everything it keeps lives in ``<cache_dir>/.follower/`` (a dot directory the
shipped webserver configurations never serve):

``checkpoint.json``
    the last sequence handled and the catalog it belongs to, written
    atomically; a node that was down continues from it on restart. Without
    one, or when the feed cannot continue from it (trimmed, a new database),
    the follower reconciles: it walks the IDs in the cache and purges those
    the catalog does not hold as live images, then follows from the
    sequence it read *before* the walk (so nothing slips between the two).
``state.json``
    what ``/_metrics``, ``/_health`` and ``huimages follow --status`` show:
    last sequence, the time of the last sign of life from the feed (a change
    or a heartbeat), the time the follower was last known to be caught up.
``seen.sqlite3``
    a fingerprint (width, height, length, content type, and where crops
    centre: focus, focus_auto) per live image seen in the feed, so a change
    that keeps it (titles, references, previews) purges nothing, and one that
    alters it purges; an image not seen before whose focus was set is purged
    too. A damaged file is set
    aside and started afresh, with a full reconcile: it only ever saves
    purges.
``purges.sqlite3``
    the purges still owed to the shared caches in front (HUIMAGES_PURGE,
    purges.py): a deletion, or a change of an image's bytes, is purged there
    too, by surrogate key, and asked again until each cache says yes.
``lock``
    an ``flock`` held by the running follower: one per node, whoever starts it.

Purging is idempotent and only ever touches the image a change names, so the
feed may be replayed from any earlier point. A deletion, or any change that
purges, is purged a second time a minute later, in case a request was
rendering that image just then.

Nothing ends the follower but a stop: any failure (a catalog that is down, a
full disk under its files, a bug) is logged with its traceback, counted
(``errors_total``) and retried with a backoff up to a heartbeat. Should the
process die all the same, the process that started it starts it again
(process.py).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..cache.directory import Cache
from ..core.config import Config
from ..core.errors import HuImagesError
from ..core.files import write_atomic
from ..core.ids import is_valid_id
from ..storage import Catalog, open_catalog
from ..storage.base import Change, ChangesGone, Doc, broken_mark, is_live, seq_number
from .purges import SharedPurges
from .status import follower_dir, read_json

log = logging.getLogger("huimages_wsgi")

#: Seconds one feed connection stays open before it is renewed.
FEED_SECONDS = 300.0
#: A deletion is purged again this many seconds later (a render then in flight).
REPURGE_AFTER = 60.0
_SAVE_EVERY = 1.0


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` as JSON: readers see the old file or the new one."""
    write_atomic(path, json.dumps(data, sort_keys=True).encode())


def fingerprint(doc: Doc | None) -> str | None:
    """What cached variants depend on; None for an image that is not live or is marked
    broken (its variants answer 404 until ``huimages check`` clears the mark)."""
    if not is_live(doc) or broken_mark(doc) is not None:
        return None
    assert doc is not None
    made = [doc.get(key) for key in ("width", "height", "length", "contenttype")]
    focus = [doc.get(key) for key in ("focus", "focus_auto")]  # where crops centre
    return json.dumps(made + focus if any(focus) else made)  # older fingerprints still match


class SeenStore:
    """Fingerprints of the live images the feed showed, in a small SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        #: Set when a damaged file was replaced: the fingerprints are gone.
        self.restarted = False
        try:
            self.conn = self._open()
        except sqlite3.DatabaseError as exc:
            self.conn = self._start_afresh(exc)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY, fp TEXT)")
        except BaseException:
            conn.close()
            raise
        return conn

    def _start_afresh(self, exc: Exception) -> sqlite3.Connection:
        """Set a damaged file aside (as ``seen.sqlite3.damaged``) and open a new one."""
        log.error("follower: %s is damaged (%s); starting it afresh", self.path, exc)
        os.replace(self.path, self.path.with_name(self.path.name + ".damaged"))
        self.restarted = True
        return self._open()

    def swap(self, imageid: str, fp: str | None) -> str | None:
        """Record ``fp`` (None: forget) and return the previous fingerprint."""
        try:
            return self._swap(imageid, fp)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):
                raise  # locked, a full disk: retried by the follower's loop
            self.conn.close()
            self.conn = self._start_afresh(exc)
            return self._swap(imageid, fp)

    def _swap(self, imageid: str, fp: str | None) -> str | None:
        row = self.conn.execute("SELECT fp FROM seen WHERE id = ?", (imageid,)).fetchone()
        if fp is None:
            self.conn.execute("DELETE FROM seen WHERE id = ?", (imageid,))
        elif row is None or row[0] != fp:
            self.conn.execute("INSERT OR REPLACE INTO seen (id, fp) VALUES (?, ?)", (imageid, fp))
        return row[0] if row else None

    def close(self) -> None:
        self.conn.close()


class Follower:
    """Follows one catalog's changes for one cache directory."""

    def __init__(
        self,
        config: Config,
        catalog: Catalog | None = None,
        heartbeat: float | None = None,
    ) -> None:
        self.config = config
        self.catalog = catalog or open_catalog(config)
        self.cache = Cache(config.cache_root, config.lock_timeout)
        self.heartbeat = heartbeat or config.follow_heartbeat
        self.dir = follower_dir(config)
        self.checkpoint_path = self.dir / "checkpoint.json"
        self.state_path = self.dir / "state.json"
        self.seen = SeenStore(self.dir / "seen.sqlite3")
        self.repurge: collections.deque[tuple[float, str]] = collections.deque()
        self.shared = SharedPurges(config, self.dir / "purges.sqlite3")
        self._shared_counted = (0, 0)
        old = read_json(self.state_path) or {}
        self.state: dict[str, Any] = {
            "pid": os.getpid(),
            "catalog": self.catalog.describe(),
            "heartbeat": self.heartbeat,
            "started": time.time(),
            "last_seq": old.get("last_seq"),
            "last_ok": None,
            "caught_up_at": None,
            "error": None,
            "purged_total": int(old.get("purged_total") or 0),
            "changes_total": int(old.get("changes_total") or 0),
            "reconciles_total": int(old.get("reconciles_total") or 0),
            "errors_total": int(old.get("errors_total") or 0),
            "restarts_total": int(old.get("restarts_total") or 0),
            "shared_purges_total": int(old.get("shared_purges_total") or 0),
            "shared_purge_failures_total": int(old.get("shared_purge_failures_total") or 0),
            "shared_purges_pending": 0,
        }
        self._saved = 0.0

    # -- checkpoint and state -------------------------------------------------------

    def load_checkpoint(self, identity: str) -> Any:
        """The saved sequence if it belongs to this catalog; None otherwise."""
        data = read_json(self.checkpoint_path)
        if not data or data.get("catalog") != identity or "since" not in data:
            return None
        return data["since"]

    def save(self, identity: str, seq: Any, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._saved < _SAVE_EVERY:
            return
        write_json_atomic(self.checkpoint_path, {"catalog": identity, "since": seq})
        self.state["last_seq"] = seq
        write_json_atomic(self.state_path, self.state)
        self._saved = now

    def note_alive(self, caught_up: bool = False) -> None:
        now = time.time()
        self.state.update(last_ok=now, error=None, pid=os.getpid())
        if caught_up:
            self.state["caught_up_at"] = now

    def failed(self, error: str) -> None:
        self.state["error"] = error[:300]
        try:
            write_json_atomic(self.state_path, self.state)
        except OSError as exc:
            log.error("follower cannot write its state: %s", exc)

    # -- purging ---------------------------------------------------------------------

    def handle(self, change: Change) -> int:
        """Purge this node's variants if the change invalidates them; the files removed."""
        self.state["changes_total"] += 1
        imageid = change.imageid
        if not is_valid_id(imageid):
            return 0  # design documents and other non-images
        fp = fingerprint(change.doc)
        before = self.seen.swap(imageid, fp)
        refocused = before is None and bool((change.doc or {}).get("focus_time"))
        if fp is not None and (before is None or before == fp) and not refocused:
            return 0  # a new image, or one whose variants stay right
        removed = self.cache.purge(imageid)
        self.shared.add(imageid)
        # a render in flight just then may write what was purged: once more, later
        self.repurge.append((time.monotonic() + REPURGE_AFTER, imageid))
        if removed:
            log.info("follower purged %d cached file(s) of %s", removed, imageid)
        self.state["purged_total"] += removed
        return removed

    def due_repurges(self) -> None:
        now = time.monotonic()
        while self.repurge and self.repurge[0][0] <= now:
            imageid = self.repurge.popleft()[1]
            self.state["purged_total"] += self.cache.purge(imageid)
            self.shared.add(imageid)  # a cache in front may have fetched it meanwhile

    def count_shared_purges(self) -> None:
        """What the purge sender (its own thread) did since the last count, into the state."""
        sent, failed = self.shared.sent_total, self.shared.failed_total
        self.state["shared_purges_total"] += sent - self._shared_counted[0]
        self.state["shared_purge_failures_total"] += failed - self._shared_counted[1]
        self._shared_counted = (sent, failed)
        self.state["shared_purges_pending"] = self.shared.pending()

    def cached_ids(self) -> Iterator[str]:
        for directory in self.cache.size_dirs():
            try:
                with os.scandir(directory) as entries:
                    names = [entry.name for entry in entries]
            except (FileNotFoundError, NotADirectoryError):
                continue
            for name in names:
                imageid = name.split(".", 1)[0]
                if not name.startswith(".") and is_valid_id(imageid):
                    yield imageid

    def reconcile(self) -> int:
        """Purge every cached image the catalog does not hold live; the files removed."""
        ids = sorted(set(self.cached_ids()))
        removed = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            live = self.catalog.live_ids(chunk)
            for imageid in chunk:
                if imageid not in live:
                    removed += self.cache.purge(imageid)
                    self.shared.add(imageid)
            self.note_alive()
        self.state["reconciles_total"] += 1
        self.state["purged_total"] += removed
        log.info("follower reconciled %d cached image(s) with %s: %d file(s) purged",
                 len(ids), self.catalog.describe(), removed)
        return removed

    # -- following -------------------------------------------------------------------

    def follow_once(self, stop: Callable[[], bool], seconds: float = FEED_SECONDS) -> None:
        """One feed connection: reconcile first when there is no usable checkpoint."""
        identity = self.catalog.identity()
        since = self.load_checkpoint(identity)
        if since is None:
            since = self.catalog.update_seq()  # read before the walk: nothing slips through
            self.reconcile()
            self.save(identity, since, force=True)
        self.state["last_seq"] = since
        self.state["pending"] = max(0, seq_number(self.catalog.update_seq()) - seq_number(since))
        self.note_alive(caught_up=self.state["pending"] == 0)
        self.save(identity, since, force=True)
        for change in self.catalog.changes(since, seconds, self.heartbeat):
            if change is None:  # heartbeat: nothing more to read, we are caught up
                self.state["pending"] = 0
                self.note_alive(caught_up=True)
                self.due_repurges()
                self.count_shared_purges()
                self.save(identity, since, force=True)
            else:
                removed = self.handle(change)
                since = change.seq
                self.note_alive()
                self.count_shared_purges()
                self.save(identity, since, force=removed > 0)
            if stop():
                break
        self.save(identity, since, force=True)

    def run(self, stop: Callable[[], bool]) -> None:
        """Follow until ``stop()``: every failure is logged, counted and retried."""
        self.shared.start()
        delay = 0.5
        while not stop():
            try:
                if self.seen.restarted:  # the fingerprints are gone: check the whole cache
                    self.seen.restarted = False
                    self.forget_checkpoint()
                self.follow_once(stop)
                delay = 0.5
            except ChangesGone as exc:
                log.warning("follower: %s; reconciling the cache", exc)
                self.forget_checkpoint()
            except Exception as exc:  # the follower outlives any failure
                if isinstance(exc, (HuImagesError, OSError)):  # a backend or the disk
                    log.warning("follower: %s; retrying in %.1f s", exc, delay)
                else:
                    log.exception("follower: unexpected failure; retrying in %.1f s", delay)
                self.state["errors_total"] += 1
                self.failed(f"{type(exc).__name__}: {exc}")
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline and not stop():
                    time.sleep(0.1)
                delay = min(delay * 2, self.heartbeat)

    def forget_checkpoint(self) -> None:
        """The next feed connection starts with a full reconcile."""
        try:
            self.checkpoint_path.unlink()
        except FileNotFoundError:
            pass

    def close(self) -> None:
        self.seen.close()
        self.shared.close()
