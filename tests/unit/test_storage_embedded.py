"""The embedded backends: originals on disk, catalog in SQLite."""

import threading
from pathlib import Path

import pytest

from huimages_wsgi.core.ids import compute_id
from huimages_wsgi.storage import BlobNotFound
from huimages_wsgi.storage.disk import DiskBlobStore
from huimages_wsgi.storage.sqlite import SQLiteCatalog

ID_A, ID_B, ID_C = sorted(compute_id(bytes([i])) for i in range(3))


@pytest.fixture
def blobs(tmp_path):
    return DiskBlobStore(tmp_path / "originals")


@pytest.fixture
def catalog(tmp_path):
    return SQLiteCatalog(tmp_path / "catalog.sqlite3")


def test_disk_blob_roundtrip(blobs):
    blobs.put(ID_A, b"original bytes", "image/jpeg", 1, 1)
    assert blobs.exists(ID_A)
    with blobs.open(ID_A) as handle:
        assert handle.read() == b"original bytes"
    assert blobs.path(ID_A).parent.name == ID_A[:2]  # sharded
    assert not [p for p in blobs.path(ID_A).parent.iterdir() if p.name.startswith(".")]
    blobs.delete(ID_A)
    blobs.delete(ID_A)  # idempotent
    assert not blobs.exists(ID_A)
    with pytest.raises(BlobNotFound):
        blobs.open(ID_A)


def test_catalog_update_and_get(catalog):
    assert catalog.get(ID_A) is None
    doc = catalog.update(ID_A, lambda d: d.update(width=10, title=["x"], ctime="1"))
    assert doc["_id"] == ID_A and catalog.get(ID_A)["width"] == 10
    catalog.update(ID_A, lambda d: d["title"].append("y"))
    assert catalog.get(ID_A)["title"] == ["x", "y"]


def test_failed_mutation_changes_nothing(catalog):
    catalog.update(ID_A, lambda d: d.update(width=10))

    def broken(doc):
        doc["width"] = 99
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        catalog.update(ID_A, broken)
    assert catalog.get(ID_A)["width"] == 10


def test_concurrent_updates_are_not_lost(catalog):
    catalog.update(ID_A, lambda d: d.update(title=[]))

    def add(n):
        catalog.update(ID_A, lambda d: d["title"].append(n))

    threads = [threading.Thread(target=add, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(catalog.get(ID_A)["title"]) == list(range(20))


def test_browsing_skips_deleted_images(catalog):
    for imageid, ctime in ((ID_A, "1"), (ID_B, "2"), (ID_C, "3")):
        catalog.update(imageid, lambda d, c=ctime: d.update(ctime=c, deleted=False))
    assert catalog.next_id(ID_A) == ID_B
    assert catalog.previous_id(ID_C) == ID_B
    assert catalog.next_id(ID_C) is None and catalog.previous_id(ID_A) is None
    catalog.update(ID_B, lambda d: d.update(deleted=True))
    assert catalog.next_id(ID_A) == ID_C and catalog.previous_id(ID_C) == ID_A
    assert {catalog.random_id() for _ in range(50)} == {ID_A, ID_C}
    assert catalog.recent_ids(10) == [ID_C, ID_A]
    assert list(catalog.ids()) == [ID_A, ID_C]
    assert list(catalog.ids(include_deleted=True)) == [ID_A, ID_B, ID_C]


def test_random_on_empty_catalog(catalog):
    assert catalog.random_id() is None


def test_processes_opening_a_new_catalog_at_once_all_get_it(tmp_path):
    """`huimages put --jobs N` opens a fresh catalog in N processes at the same moment:
    each switches it to WAL, and none may fail with 'database is locked'."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    for round_ in range(10):
        path = tmp_path / f"catalog-{round_}.sqlite3"
        start = context.Barrier(6)
        failures = context.Queue()
        workers = [context.Process(target=_open_catalog, args=(path, start, failures))
                   for _ in range(6)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        assert [worker.exitcode for worker in workers] == [0] * 6
        assert failures.empty(), failures.get()


def _open_catalog(path: Path, start, failures) -> None:
    from huimages_wsgi.storage.sqlite import SQLiteCatalog

    start.wait()
    try:
        catalog = SQLiteCatalog(path)
        catalog.update(ID_A, lambda doc: doc.update(width=1))
    except Exception as exc:  # reported to the test, which fails with it
        failures.put(repr(exc))
