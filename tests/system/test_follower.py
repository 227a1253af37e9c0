"""The follower outlives its failures: a dead follower is started again, a damaged state
file is set aside, and deletes keep reaching the node (node/process.py, node/follower.py).

Two nodes share one catalog: node A writes and deletes with a cache of its
own; node B has only its cache and the follower that ``huimages serve``
starts (``start_follower_process``), here on the embedded default (one
SQLite catalog, two cache directories) and on S3 + CouchDB.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from huimages_wsgi import Config, ImageStore
from huimages_wsgi.node.process import start_follower_process, stop_follower_process
from huimages_wsgi.node.status import follower_check, follower_dir, follower_status

from .. import imagefactory
from ..backends import backend_store

BOTH = pytest.mark.parametrize("backend", ["embedded", "s3+couch"])


def wait_for(check: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


@pytest.fixture
def nodes(backend: str, any_config: Config, tmp_path: Path) -> Iterator[tuple]:
    """(node A's store, node B's configuration, node B's store), B's follower running."""
    writer = backend_store(backend, any_config)
    node_b = any_config.with_changes(cache_dir=tmp_path / "node-b-cache", follow=True,
                                     follow_heartbeat=1.0)
    process = start_follower_process(node_b)
    try:
        wait_for(lambda: (follower_status(node_b) or {}).get("lag_seconds") is not None, 30,
                 "the follower caught up")
        yield writer, node_b, ImageStore(node_b)
    finally:
        stop_follower_process(process)


def cached_on_b(writer: ImageStore, reader: ImageStore, seed: int) -> tuple[str, Path]:
    imageid = writer.save_image(imagefactory.photo_jpeg(320, 240, seed=seed))
    return imageid, reader.variant_path(imageid, reader.size_for("60x60"))


@BOTH
def test_a_follower_that_dies_is_started_again_and_deletes_arrive(nodes):
    writer, node_b, reader = nodes
    imageid, cached = cached_on_b(writer, reader, seed=21)
    pid = follower_status(node_b)["pid"]
    os.kill(pid, signal.SIGKILL)  # the process that follows, not its supervisor
    status = wait_for(lambda: (follower_status(node_b) or {}).get("restarts_total"), 15,
                      "the restart counted")
    assert status == 1
    wait_for(lambda: follower_status(node_b)["pid"] != pid, 15, "a new follower process")
    writer.delete_image(imageid)
    wait_for(lambda: not cached.exists(), 30, "the delete purged node B's cache")
    check = follower_check(node_b)
    assert check["ok"] and check["restarts_total"] == 1, check


@BOTH
def test_a_damaged_state_file_is_set_aside_and_deletes_arrive(nodes):
    writer, node_b, reader = nodes
    imageid, cached = cached_on_b(writer, reader, seed=22)
    seen = follower_dir(node_b) / "seen.sqlite3"
    with open(seen, "r+b") as handle:  # damaged in place, under the open connection
        handle.write(b"not a database, " * 64)
    other, other_cached = cached_on_b(writer, reader, seed=23)
    writer.delete_image(imageid)
    wait_for(lambda: not cached.exists(), 30, "the delete purged node B's cache")
    assert seen.with_name("seen.sqlite3.damaged").exists()
    writer.delete_image(other)  # and it goes on following
    wait_for(lambda: not other_cached.exists(), 30, "the next delete purged too")
    assert follower_check(node_b)["ok"]
