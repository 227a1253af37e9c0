"""A delete reaches every node's cache by itself: the change-feed follower (follower.py).

Two nodes are two ``huimages serve`` (gunicorn) processes with their own
cache directories on one SeaweedFS + pouchdb-server, or on one embedded data
directory (SQLite); a third setup puts a real lighttpd in front of node B's
cache, with ``huimages fcgi`` behind it. Nothing is mocked: deletions go
through node A's HTTP API or CLI, and node B's cache directory and answers
are watched.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from huimages_wsgi.storage.sqlite import SQLiteCatalog

from .. import imagefactory as f
from ..conftest import LiveServer
from ..webservers import (
    HUIMAGES,
    FcgiBackend,
    WebServer,
    free_port,
    http_get,
    make_base_dir,
    remove_base_dir,
)
from .test_deployment import render_with_cli

TOKEN = "cluster-token-0123456789"
BOUND = 10.0  # seconds: the bound for node B (the follower needs well under one)
FAST = {"HUIMAGES_UPLOAD_TOKEN": TOKEN, "HUIMAGES_FOLLOW_HEARTBEAT": "1"}


def fetch(url: str, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method,
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_for(condition: Callable[[], bool], seconds: float = BOUND) -> float:
    """Seconds until ``condition()`` held; fails after ``seconds``."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if condition():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"not within {seconds} s")


def upload(node: LiveServer, tmp_path: Path, seed: int) -> str:
    photo = tmp_path / f"photo-{seed}.jpg"
    photo.write_bytes(f.photo_jpeg(640, 480, seed=seed))
    return node.cli("put", str(photo)).stdout.strip()


class Node:
    """A LiveServer and where its cache is."""

    def __init__(self, server: LiveServer, cache: Path) -> None:
        self.server, self.cache = server, cache

    def variant_path(self, imageid: str, size: str = "120x120") -> Path:
        return self.cache / size / f"{imageid}.jpeg"

    def cached(self, imageid: str, size: str = "120x120") -> Path:
        assert fetch(f"{self.server.url}/{size}/{imageid}.jpeg")[0] == 200
        path = self.variant_path(imageid, size)
        assert path.is_file()
        return path

    def answers(self, imageid: str, size: str = "120x120") -> int:
        return fetch(f"{self.server.url}/{size}/{imageid}.jpeg")[0]


def start_pair(base: Path, shared: dict[str, str], one_data_dir: bool) -> list[Node]:
    nodes = []
    for name in ("a", "b"):
        data = base / ("data" if one_data_dir else f"data-{name}")
        cache = base / f"cache-{name}"
        server = LiveServer(data, {**shared, **FAST, "HUIMAGES_CACHE_DIR": str(cache)})
        server.log = base / f"server-{name}.log"
        nodes.append(Node(server.start(), cache))
    return nodes


@pytest.fixture(scope="module", params=["s3+couch", "sqlite"])
def pair(request, tmp_path_factory) -> Iterator[list[Node]]:
    """Node A and node B: separate processes and caches, one catalog and blob store."""
    base = tmp_path_factory.mktemp(f"cluster-{request.param.replace('+', '-')}")
    if request.param == "s3+couch":
        s3, couch = request.getfixturevalue("s3_server"), request.getfixturevalue("couch_server")
        shared = {**s3.env, "HUIMAGES3BUCKET": s3.create_bucket(),
                  "HUIMAGESCOUCHSERVER": couch.url,
                  "HUIMAGES_COUCHDB_NAME": f"huimages_cluster_{secrets.token_hex(4)}"}
        nodes = start_pair(base, shared, one_data_dir=False)
    else:
        nodes = start_pair(base, {}, one_data_dir=True)  # one node, several processes
    yield nodes
    for node in nodes:
        node.server.stop()


def test_api_delete_on_a_purges_b_within_the_bound(pair, tmp_path):
    a, b = pair
    doomed, kept = upload(a.server, tmp_path, 1), upload(a.server, tmp_path, 2)
    doomed_on_a, doomed_on_b = a.cached(doomed), b.cached(doomed)
    kept_on_b = b.cached(kept)
    kept_stat = kept_on_b.stat()

    status, body = fetch(f"{a.server.url}/_api/images/{doomed}", "DELETE")
    answer = json.loads(body)
    assert status == 200, body
    assert answer["deleted"] is True and answer["id"] == doomed
    # this request or node A's own follower (it may be first) removed A's copy
    assert answer["this_node_cache"]["purged"] is True
    assert answer["this_node_cache"]["files_removed"] in (0, 1)
    assert answer["other_nodes_within_seconds"] <= BOUND
    assert not doomed_on_a.exists()  # this node: at once

    wait_for(lambda: not doomed_on_b.exists())
    assert b.answers(doomed) == 404
    assert kept_on_b.stat().st_ino == kept_stat.st_ino  # the other image: untouched
    assert kept_on_b.stat().st_mtime_ns == kept_stat.st_mtime_ns
    assert b.answers(kept) == 200


def test_cli_delete_on_a_purges_b(pair, tmp_path):
    a, b = pair
    doomed, kept = upload(a.server, tmp_path, 3), upload(a.server, tmp_path, 4)
    doomed_on_b, kept_on_b = b.cached(doomed, "90x90"), b.cached(kept, "90x90")
    b.cached(doomed, "60x60")

    result = a.server.cli("delete", doomed)
    assert "gone from the store" in result.stdout and "follower" in result.stdout

    wait_for(lambda: not doomed_on_b.exists() and not b.variant_path(doomed, "60x60").exists())
    assert b.answers(doomed, "90x90") == 404
    assert kept_on_b.is_file()
    metrics = fetch(f"{b.server.url}/_metrics")[1].decode()
    assert "huimages_follower_stuck 0" in metrics
    assert "huimages_follower_last_seq" in metrics


def test_a_node_that_was_down_catches_up_on_restart(pair, tmp_path):
    a, b = pair
    doomed, kept = upload(a.server, tmp_path, 5), upload(a.server, tmp_path, 6)
    doomed_on_b, kept_on_b = b.cached(doomed), b.cached(kept)

    b.server.stop()
    a.server.cli("delete", doomed)
    time.sleep(1.5)
    assert doomed_on_b.is_file()  # nobody purged it while B was down
    b.server.start()
    wait_for(lambda: not doomed_on_b.exists())
    assert b.answers(doomed) == 404 and kept_on_b.is_file()
    checkpoint = json.loads((b.cache / ".follower" / "checkpoint.json").read_text())
    assert checkpoint["since"] is not None


def test_a_checkpoint_of_another_catalog_means_a_full_reconcile(pair, tmp_path):
    """A node away longer than the feed keeps (or moved to a new database) reconciles."""
    a, b = pair
    doomed, kept = upload(a.server, tmp_path, 7), upload(a.server, tmp_path, 8)
    doomed_on_b, kept_on_b = b.cached(doomed), b.cached(kept)
    b.server.stop()
    a.server.cli("delete", doomed)
    checkpoint = b.cache / ".follower" / "checkpoint.json"
    data = json.loads(checkpoint.read_text())
    checkpoint.write_text(json.dumps({**data, "catalog": "some other catalog"}))
    before = json.loads((b.cache / ".follower" / "state.json").read_text())["reconciles_total"]

    b.server.start()
    wait_for(lambda: not doomed_on_b.exists())
    assert kept_on_b.is_file()
    wait_for(lambda: json.loads((b.cache / ".follower" / "state.json").read_text())
             ["reconciles_total"] == before + 1)


def test_a_stuck_follower_shows_on_health(pair):
    _, b = pair
    assert fetch(f"{b.server.url}/_health")[0] == 200
    pid = json.loads((b.cache / ".follower" / "state.json").read_text())["pid"]
    os.kill(pid, signal.SIGSTOP)  # frozen: no more word from the feed
    try:
        def degraded() -> bool:  # each worker process reuses its last probe for a second
            status, body = fetch(f"{b.server.url}/_health")
            follower = json.loads(body)["checks"]["follower"]
            return status == 503 and not follower["ok"] and "stuck" in follower["error"]

        wait_for(degraded, 20)
        assert "huimages_follower_stuck 1" in fetch(f"{b.server.url}/_metrics")[1].decode()
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: fetch(f"{b.server.url}/_health")[0] == 200)


def test_one_follower_per_node_not_per_worker(pair):
    _, b = pair
    assert b.server.workers == 2

    def followers() -> set[int]:
        found = subprocess.run(["pgrep", "-f", "huimages_wsgi.cli follow"],
                               capture_output=True, text=True).stdout.split()
        return {int(pid) for pid in found
                if f"HUIMAGES_CACHE_DIR={b.cache}" in _environ(int(pid))}

    deadline = time.monotonic() + 15  # the supervisor starts its child when it has the lock
    while len(mine := followers()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    # one supervising process for the node, and the child it keeps following
    supervisors = [pid for pid in mine if _parent(pid) not in mine]
    assert len(supervisors) == 1 and len(mine) == 2, mine


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _environ(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().replace(b"\0", b"\n").decode()
    except OSError:
        return ""


def test_sqlite_trimmed_changes_mean_a_full_reconcile(tmp_path):
    """The SQLite feed keeps only the newest changes: a checkpoint older than them reconciles."""
    base = tmp_path
    a, b = start_pair(base, {}, one_data_dir=True)
    try:
        doomed, kept = upload(a.server, tmp_path, 9), upload(a.server, tmp_path, 10)
        doomed_on_b, kept_on_b = b.cached(doomed), b.cached(kept)
        b.server.stop()
        a.server.cli("delete", doomed)
        catalog = SQLiteCatalog(base / "data" / "catalog.sqlite3")
        catalog.changes_kept = 10
        for _ in range(1000):  # metadata edits push the deletion out of the kept window
            catalog.update(kept, lambda doc: doc.update(note="x"))
        trimmed = catalog._query("SELECT value FROM meta WHERE key = 'trimmed'")
        assert trimmed, "the changes table was not trimmed"
        b.server.start()
        wait_for(lambda: not doomed_on_b.exists())
        assert kept_on_b.is_file()  # edits that keep the pixels purge nothing
        state = json.loads((b.cache / ".follower" / "state.json").read_text())
        assert state["reconciles_total"] >= 2  # the first start, and the trimmed checkpoint
    finally:
        a.server.stop()
        b.server.stop()


# -- node B's cache served by a real lighttpd ------------------------------------------------


@pytest.fixture(scope="module")
def lighttpd_b(s3_server, couch_server) -> Iterator[dict]:
    """Node A: ``huimages serve``. Node B: lighttpd on its cache, ``huimages fcgi`` behind."""
    base = make_base_dir()  # 0755: lighttpd runs as www-data under root
    shared = {**s3_server.env, "HUIMAGES3BUCKET": s3_server.create_bucket(),
              "HUIMAGESCOUCHSERVER": couch_server.url,
              "HUIMAGES_COUCHDB_NAME": f"huimages_lighttpd_{secrets.token_hex(4)}", **FAST}
    node_a = LiveServer(base / "data-a", shared).start()
    home = base / "b"
    cache_dir, run_dir = home / "cache", home / "run"  # the run dir is made by huimages config
    for directory in (home, cache_dir):
        directory.mkdir(mode=0o755)
    env = {**shared, "HUIMAGES_DATA_DIR": str(home / "data"), "HUIMAGES_CACHE_DIR": str(cache_dir)}
    backend = FcgiBackend(socket_path=home / "fcgi.sock", env=env, log_path=home / "fcgi.log")
    server = None
    try:
        backend.start()
        port = free_port()
        server = WebServer("lighttpd", render_with_cli("lighttpd", cache_dir, port, run_dir,
                                                       backend), run_dir, port).start()
        yield {"a": node_a, "server": server, "backend": backend, "cache": cache_dir,
               "base": base}
    finally:
        if server is not None:
            server.stop()
        backend.stop()
        node_a.stop()
        remove_base_dir(base)


def test_lighttpd_stops_serving_an_image_deleted_on_another_node(lighttpd_b):
    a, server, cache = lighttpd_b["a"], lighttpd_b["server"], lighttpd_b["cache"]
    base = lighttpd_b["base"]
    doomed, kept = upload(a, base, 11), upload(a, base, 12)
    for imageid in (doomed, kept):
        assert http_get(server.port, f"/120x120/{imageid}.jpeg")[0] == 200  # made by fcgi
    status, headers, _ = http_get(server.port, f"/120x120/{doomed}.jpeg")
    assert status == 200 and "x-content-type-options" not in headers  # lighttpd, from disk
    doomed_file = cache / "120x120" / f"{doomed}.jpeg"
    assert doomed_file.is_file()

    assert fetch(f"{a.url}/_api/images/{doomed}", "DELETE")[0] == 200
    wait_for(lambda: http_get(server.port, f"/120x120/{doomed}.jpeg")[0] == 404)
    assert not doomed_file.exists()
    status, headers, _ = http_get(server.port, f"/120x120/{kept}.jpeg")
    assert status == 200 and "x-content-type-options" not in headers  # still a static hit


def test_follow_alone_keeps_a_webserver_only_cache_coherent(lighttpd_b):
    """``huimages follow`` for a node where only a webserver serves the cache."""
    a, base = lighttpd_b["a"], lighttpd_b["base"]
    doomed = upload(a, base, 13)
    cache = base / "static-only-cache"
    (cache / "120x120").mkdir(parents=True)
    status, body = fetch(f"{a.url}/120x120/{doomed}.jpeg")
    (cache / "120x120" / f"{doomed}.jpeg").write_bytes(body)
    env = {**a.env, "HUIMAGES_CACHE_DIR": str(cache)}
    follower = subprocess.Popen([str(HUIMAGES), "follow"], env=env)
    try:
        wait_for(lambda: (cache / ".follower" / "checkpoint.json").is_file(), 20)
        a.cli("delete", doomed)
        wait_for(lambda: not (cache / "120x120" / f"{doomed}.jpeg").exists())
        status = subprocess.run([str(HUIMAGES), "follow", "--status"], env=env,
                                capture_output=True, text=True)
        report = json.loads(status.stdout)
        assert report["purged_total"] >= 1 and report["stuck"] is False
        wait_for(lambda: subprocess.run([str(HUIMAGES), "follow", "--status"], env=env,
                                        capture_output=True).returncode == 0)
    finally:
        follower.send_signal(signal.SIGTERM)
        assert follower.wait(15) == 0
