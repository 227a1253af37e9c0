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
    a fingerprint (width, height, length, content type) per live image seen
    in the feed, so a change that keeps it (titles, references, previews)
    purges nothing, and one that alters it purges.
``lock``
    an ``flock`` held by the running follower: one per node, whoever starts it.

Purging is idempotent and only ever touches the image a change names, so the
feed may be replayed from any earlier point. A deletion is purged a second
time a minute later, in case a request was rendering that image just then.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..cache.directory import Cache
from ..core.config import Config
from ..core.errors import HuImagesError
from ..core.ids import is_valid_id
from ..storage import Catalog, open_catalog
from ..storage.base import Change, ChangesGone, Doc, is_live, seq_number

log = logging.getLogger("huimages_wsgi")

FOLLOWER_DIR = ".follower"
#: A follower silent for this many heartbeats (no change, no heartbeat) is stuck.
STUCK_BEATS = 3
#: Seconds one feed connection stays open before it is renewed.
FEED_SECONDS = 300.0
#: A deletion is purged again this many seconds later (a render then in flight).
REPURGE_AFTER = 60.0
_SAVE_EVERY = 1.0


def follower_dir(config: Config) -> Path:
    return config.cache_root / FOLLOWER_DIR


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write a whole new file beside ``path`` and rename it: readers see old or new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def fingerprint(doc: Doc | None) -> str | None:
    """What cached variants depend on; None for an image that is not live."""
    if not is_live(doc):
        return None
    assert doc is not None
    return json.dumps([doc.get(key) for key in ("width", "height", "length", "contenttype")])


class SeenStore:
    """Fingerprints of the live images the feed showed, in a small SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.conn.execute("CREATE TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY, fp TEXT)")

    def swap(self, imageid: str, fp: str | None) -> str | None:
        """Record ``fp`` (None: forget) and return the previous fingerprint."""
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

    def alive(self, caught_up: bool = False) -> None:
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
        if fp is not None and (before is None or before == fp):
            return 0  # a new image, or one whose variants stay right
        removed = self.cache.purge(imageid)
        if fp is None:
            self.repurge.append((time.monotonic() + REPURGE_AFTER, imageid))
        if removed:
            log.info("follower purged %d cached file(s) of %s", removed, imageid)
        self.state["purged_total"] += removed
        return removed

    def due_repurges(self) -> None:
        now = time.monotonic()
        while self.repurge and self.repurge[0][0] <= now:
            self.state["purged_total"] += self.cache.purge(self.repurge.popleft()[1])

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
            self.alive()
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
        self.alive(caught_up=self.state["pending"] == 0)
        self.save(identity, since, force=True)
        for change in self.catalog.changes(since, seconds, self.heartbeat):
            if change is None:  # heartbeat: nothing more to read, we are caught up
                self.state["pending"] = 0
                self.alive(caught_up=True)
                self.due_repurges()
                self.save(identity, since, force=True)
            else:
                removed = self.handle(change)
                since = change.seq
                self.alive()
                self.save(identity, since, force=removed > 0)
            if stop():
                break
        self.save(identity, since, force=True)

    def run(self, stop: Callable[[], bool]) -> None:
        """Follow until ``stop()``; a failing catalog is retried, never the end."""
        delay = 0.5
        while not stop():
            try:
                self.follow_once(stop)
                delay = 0.5
            except ChangesGone as exc:
                log.warning("follower: %s; reconciling the cache", exc)
                try:
                    self.checkpoint_path.unlink()
                except FileNotFoundError:
                    pass
            except (HuImagesError, OSError, ValueError) as exc:
                log.warning("follower: %s; retrying in %.1f s", exc, delay)
                self.failed(str(exc))
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline and not stop():
                    time.sleep(0.1)
                delay = min(delay * 2, self.heartbeat)

    def close(self) -> None:
        self.seen.close()


# -- one per node -------------------------------------------------------------------


def hold_lock(config: Config, stop: Callable[[], bool]) -> int | None:
    """Wait for this node's follower lock (another follower may still be leaving)."""
    directory = follower_dir(config)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    told = False
    while not stop():
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        if not told:
            log.info("another follower runs for %s; waiting for it to stop", config.cache_root)
            told = True
        time.sleep(0.5)
    os.close(fd)
    return None


class _Stopped(BaseException):
    """Raised by the first SIGTERM/SIGINT/SIGHUP, so a blocking feed read ends at once.

    A BaseException, like KeyboardInterrupt, so no ``except Exception`` on the
    way swallows it. Stopping anywhere is safe: the checkpoint is written
    atomically and purging is idempotent, so the next start goes on from the
    last checkpoint.
    """


def run_follower(config: Config, parent: int | None = None) -> None:
    """``huimages follow``: follow until SIGTERM/SIGINT (or until ``parent`` is gone)."""
    stopping: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        first = not stopping
        stopping.append(signum)
        if first:
            raise _Stopped

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)

    def stop() -> bool:
        return bool(stopping) or (parent is not None and os.getppid() != parent)

    try:
        fd = hold_lock(config, stop)
        if fd is None:
            return
        follower = Follower(config)
        log.info("follower for %s on %s (heartbeat %.1f s)", config.cache_root,
                 follower.catalog.describe(), follower.heartbeat)
        try:
            follower.run(stop)
        finally:
            follower.close()
            os.close(fd)
    except _Stopped:
        log.info("follower for %s stopped", config.cache_root)


def start_follower_process(config: Config) -> subprocess.Popen | None:
    """The node's follower as a child process (``huimages follow``), or None if switched off.

    A process rather than a thread: the gunicorn master forks workers, and a
    fork must not copy a thread that holds locks. The child leaves when this
    process does (it watches its parent).
    """
    if not config.follow:
        return None
    env = dict(os.environ)
    env.update(
        HUIMAGES_DATA_DIR=str(config.data_dir),
        HUIMAGES_CACHE_DIR=str(config.cache_root),
        HUIMAGES_BACKEND_TIMEOUT=str(config.backend_timeout),
        HUIMAGES_FOLLOW_HEARTBEAT=str(config.follow_heartbeat),
        HUIMAGES_LOG_FORMAT=config.log_format,
    )
    for name in ("HUIMAGESCOUCHSERVER", "COUCHSERVER", "HUIMAGES_COUCHDB_NAME"):
        env.pop(name, None)
    if config.couch_server:
        env.update(HUIMAGESCOUCHSERVER=config.couch_server, HUIMAGES_COUCHDB_NAME=config.couch_db)
    command = [sys.executable, "-m", "huimages_wsgi.cli", "follow", "--parent", str(os.getpid())]
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
    process.owner_pid = os.getpid()  # type: ignore[attr-defined]
    return process


def stop_follower_process(process: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """Stop it, from the process that started it only (flup's forked children unwind
    through the same ``finally`` and must leave the node's follower alone)."""
    if process is None or getattr(process, "owner_pid", None) != os.getpid():
        return
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# -- what metrics, health and `follow --status` show --------------------------------------


def follower_status(config: Config, now: float | None = None) -> dict[str, Any] | None:
    """This node's follower as its state file tells it; None when none ever ran here."""
    state = read_json(follower_dir(config) / "state.json")
    if state is None:
        return None
    now = time.time() if now is None else now
    heartbeat = float(state.get("heartbeat") or config.follow_heartbeat)
    last_ok = state.get("last_ok")
    caught_up = state.get("caught_up_at")
    silent = now - float(last_ok) if last_ok else None
    stuck_after = STUCK_BEATS * heartbeat + 5
    return {
        "last_seq": state.get("last_seq"),
        "last_seq_number": seq_number(state.get("last_seq")),
        "seconds_since_feed": round(silent, 3) if silent is not None else None,
        "lag_seconds": round(now - float(caught_up), 3) if caught_up else None,
        "stuck": silent is None or silent > stuck_after,
        "stuck_after_seconds": stuck_after,
        "error": state.get("error"),
        "purged_total": state.get("purged_total", 0),
        "changes_total": state.get("changes_total", 0),
        "reconciles_total": state.get("reconciles_total", 0),
        "pid": state.get("pid"),
    }


def follower_check(config: Config) -> dict[str, Any]:
    """The ``follower`` entry of ``/_health``: not ok when stuck (or never ran here)."""
    status = follower_status(config)
    where = str(follower_dir(config))
    if status is None:
        return {"backend": where, "ok": False,
                "error": "no follower has run for this cache (huimages follow)"}
    result: dict[str, Any] = {
        "backend": where,
        "ok": not status["stuck"],
        "last_seq": status["last_seq"],
        "lag_seconds": status["lag_seconds"],
        "seconds_since_feed": status["seconds_since_feed"],
    }
    if status["stuck"]:
        result["error"] = (
            f"stuck: no word from the change feed for more than {status['stuck_after_seconds']:g}"
            f" s ({status['error'] or 'no error recorded'}); cached copies of images deleted"
            " elsewhere may still be served here"
        )
    return result


def follower_metrics(config: Config) -> list[str]:
    """Prometheus lines for ``/_metrics``; none when no follower ever ran for this cache."""
    status = follower_status(config)
    if status is None:
        return []
    gauges = (
        ("follower_last_seq", "last_seq_number", "Sequence of the last catalog change handled."),
        ("follower_lag_seconds", "lag_seconds",
         "Seconds since the follower was last known to have applied every change."),
        ("follower_feed_silence_seconds", "seconds_since_feed",
         "Seconds since the change feed last sent a change or a heartbeat."),
    )
    lines: list[str] = []
    for name, key, text in gauges:
        value = status[key]
        if value is not None:
            lines += [f"# HELP huimages_{name} {text}", f"# TYPE huimages_{name} gauge",
                      f"huimages_{name} {value}"]
    lines += ["# HELP huimages_follower_stuck 1 when the follower is stuck (see /_health).",
              "# TYPE huimages_follower_stuck gauge",
              f"huimages_follower_stuck {int(status['stuck'])}"]
    for name, key, text in (
        ("follower_purged_files", "purged_total", "Cached files the follower removed."),
        ("follower_changes", "changes_total", "Catalog changes the follower read."),
        ("follower_reconciles", "reconciles_total", "Full reconciles of the cache."),
    ):
        lines += [f"# HELP huimages_{name}_total {text}", f"# TYPE huimages_{name}_total counter",
                  f"huimages_{name}_total {int(status[key] or 0)}"]
    return lines


# -- what a delete answers -----------------------------------------------------------


def purge_bound(config: Config) -> float:
    """Seconds within which every healthy node's follower has purged a deletion.

    Changes stream to followers as they happen (well under a second); a
    follower that has not heard from the feed for this long reports itself
    stuck on ``/_health``.
    """
    return STUCK_BEATS * config.follow_heartbeat + 5


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


def deletion_notice(imageid: str, answer: Any, config: Config) -> str:
    """One human paragraph from a local delete (files removed) or the API's answer."""
    if not isinstance(answer, dict):
        answer = deletion_answer(imageid, int(answer or 0), config)
    removed = (answer.get("this_node_cache") or {}).get("files_removed", 0)
    return (
        f"deleted {imageid}: gone from the store; {removed} cached file(s) removed on this"
        f" node. {str(answer.get('other_nodes', '')).capitalize()}."
    )
