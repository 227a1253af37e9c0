"""The sync order of an upload on the embedded default, observed on the real code path.

``os.open``/``os.fsync``/``os.replace`` are wrapped to record what they are called
with (they still do their work: this observes the real disk writes, it mocks
nothing), and the catalog's commit is recorded when it returns. An upload must
fsync the original, rename it into place, fsync its directory (and the root
above a new shard directory), and only then commit the catalog, which SQLite
does with ``synchronous=FULL``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest

from huimages_wsgi import ImageStore
from huimages_wsgi.core.ids import compute_id
from huimages_wsgi.storage.sqlite import SQLiteCatalog

from .. import imagefactory as f


@pytest.fixture
def recorded(store: ImageStore, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(call, path) for every fsync, rename and catalog commit, in order."""
    calls: list[tuple[str, str]] = []
    paths: dict[int, str] = {}
    real_open, real_fsync, real_replace = os.open, os.fsync, os.replace
    real_update = store.catalog.update

    def recording_open(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        paths[fd] = os.fspath(path)
        return fd

    def recording_fsync(fd):
        real_fsync(fd)
        calls.append(("fsync", paths.get(fd, f"fd {fd}")))

    def recording_replace(src, dst, *args, **kwargs):
        real_replace(src, dst, *args, **kwargs)
        calls.append(("rename", os.fspath(dst)))

    def recording_update(imageid, mutate):
        doc = real_update(imageid, mutate)
        calls.append(("commit", imageid))
        return doc

    monkeypatch.setattr(os, "open", recording_open)
    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    monkeypatch.setattr(store.catalog, "update", recording_update)
    return calls


def _original_calls(calls: list[tuple[str, str]], original: Path) -> list[tuple[str, str]]:
    """The calls about the original, its directory, the root and the commit (not previews)."""
    shard, root = str(original.parent), str(original.parent.parent)
    wanted = []
    for call, path in calls:
        if call == "commit":
            wanted.append((call, "catalog"))
        elif path in (shard, root):
            wanted.append((call, {shard: "shard dir", root: "root dir"}[path]))
        elif Path(path).parent == original.parent and Path(path).name.startswith(
            f".{original.name}."
        ):
            wanted.append((call, "temporary original"))
        elif path == str(original):
            wanted.append((call, "original"))
    return wanted


def test_an_upload_syncs_the_original_then_its_directory_then_commits(store, recorded):
    data = f.photo_jpeg(1200, 900)  # big enough for a preview: which is not synced
    imageid = store.save_image(data)
    original = store.blobs.path(imageid)
    assert _original_calls(recorded, original) == [
        ("fsync", "temporary original"),
        ("rename", "original"),
        ("fsync", "shard dir"),
        ("fsync", "root dir"),  # the shard directory was new
        ("commit", "catalog"),
    ]
    assert original.read_bytes() == data
    previews = [path for call, path in recorded if call == "fsync" and ".p512" in path]
    assert previews == []  # previews can be made again: no sync for them


def test_an_upload_into_an_existing_shard_syncs_only_that_directory(store, recorded):
    data = f.solid_jpeg(40, 30)
    store.blobs.path(compute_id(data)).parent.mkdir(parents=True)  # another image made it
    recorded.clear()
    imageid = store.save_image(data)
    assert _original_calls(recorded, store.blobs.path(imageid)) == [
        ("fsync", "temporary original"),
        ("rename", "original"),
        ("fsync", "shard dir"),
        ("commit", "catalog"),
    ]


def test_a_repeated_upload_syncs_the_directory_before_it_commits(store, recorded):
    data = f.solid_jpeg()
    imageid = store.save_image(data)
    recorded.clear()
    assert store.save_image(data, title="again") == imageid
    assert _original_calls(recorded, store.blobs.path(imageid)) == [
        ("fsync", "shard dir"),  # an earlier put may have failed after its rename
        ("commit", "catalog"),
    ]


def test_the_catalog_commits_with_synchronous_full_in_every_thread(store):
    assert isinstance(store.catalog, SQLiteCatalog)
    levels = []

    def level() -> None:
        levels.append(store.catalog._connection().execute("PRAGMA synchronous").fetchone()[0])

    level()
    thread = threading.Thread(target=level)
    thread.start()
    thread.join()
    assert levels == [2, 2]  # 2 = FULL
    mode = store.catalog._connection().execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    with pytest.raises(ValueError):
        SQLiteCatalog(store.catalog.path, synchronous="OFF")
    assert sqlite3.connect(store.catalog.path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
