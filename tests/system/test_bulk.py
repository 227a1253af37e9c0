"""Bulk jobs on every core and every node: ``--jobs N`` and ``--shard K/N`` (parallel.py).

Whatever the number of processes or shards, ``put``, ``previews --all`` and
``migrate`` must leave exactly the catalog and the blobs one process leaves;
Ctrl-C stops them cleanly and a rerun finishes the job.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from huimages_wsgi import Config, ImageStore
from huimages_wsgi.core.ids import compute_id
from huimages_wsgi.core.previews import PREVIEW_NAMES
from huimages_wsgi.node.parallel import parse_shard, shard_of

from .. import imagefactory as f
from ..backends import backend_config, backend_store, primary_has, read_original
from ..conftest import BIN

KEYS = ("width", "height", "length", "contenttype", "previews", "deleted", "title", "types")


def huimages(data_dir: Path, *args: str, env: dict[str, str] | None = None,
             check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(BIN / "huimages"), *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, "HUIMAGES_DATA_DIR": str(data_dir), **(env or {})},
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def catalog_of(data_dir: Path) -> dict[str, dict]:
    store = ImageStore(Config(data_dir=data_dir))
    return {imageid: {key: store.catalog.get(imageid).get(key) for key in KEYS}
            for imageid in store.catalog.ids(include_deleted=True)}


def blobs_of(data_dir: Path) -> dict[str, bytes]:
    root = data_dir / "originals"
    return {str(path.relative_to(root)): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file() and not path.name.startswith(".")}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for seed in range(8):  # big enough for both previews (longest side > 1.5 x 512)
        path = folder / f"photo-{seed}.jpg"
        path.write_bytes(f.photo_jpeg(1000 + 40 * seed, 800, seed=seed))
        paths.append(path)
    return paths


def test_shards_are_stable_and_split_every_id_once():
    ids = [compute_id(str(n).encode()) for n in range(400)]
    for count in (1, 2, 3, 7):
        shards = [shard_of(imageid, count) for imageid in ids]
        assert set(shards) == set(range(count))  # every shard gets some
        assert shards == [shard_of(imageid, count) for imageid in ids]  # same every time
    # the value is the ID's leading base32 digits: fixed across machines and versions
    assert shard_of("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA01", 2) == 0
    assert shard_of("AAAAAAAAAAABAAAAAAAAAAAAAAAAAAAA01", 2) == 1
    assert shard_of("not-an-id", 5) == shard_of("not-an-id", 5)
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(Exception, match="K/N"):
            parse_shard(bad)


def test_put_with_jobs_stores_what_one_process_stores(photos, tmp_path):
    files = [str(path) for path in photos]
    one = huimages(tmp_path / "one", "put", "--jobs", "1", "--title", "T", *files)
    two = huimages(tmp_path / "two", "put", "--jobs", "2", "--title", "T", *files)
    assert one.stdout.split() == two.stdout.split()  # same IDs, in the order of the files
    assert len(set(one.stdout.split())) == len(photos)
    assert catalog_of(tmp_path / "one") == catalog_of(tmp_path / "two")
    assert blobs_of(tmp_path / "one") == blobs_of(tmp_path / "two")


def test_put_progress_has_rate_and_eta(photos, tmp_path):
    result = huimages(tmp_path / "data", "put", "--jobs", "2", "--progress",
                      *map(str, photos[:3]))
    assert "3/3" in result.stderr and "/s" in result.stderr and "ETA" in result.stderr


def strip_previews(data_dir: Path) -> None:
    """Make the images look uploaded before previews existed."""
    store = ImageStore(Config(data_dir=data_dir))
    for imageid in store.catalog.ids():
        store.catalog.update(imageid, lambda doc: doc.pop("previews", None))
        for name in PREVIEW_NAMES:
            store.blobs.derived_path(imageid, name).unlink(missing_ok=True)


def test_previews_sharded_over_two_nodes_equals_one_process(photos, tmp_path):
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    huimages(single, "put", *map(str, photos))
    reference_catalog, reference_blobs = catalog_of(single), blobs_of(single)
    strip_previews(single)
    shutil.copytree(single, sharded)
    assert catalog_of(single) != reference_catalog

    out = huimages(single, "previews", "--all", "--jobs", "1").stdout
    assert out.startswith(f"{len(photos)} made")
    made = 0
    for shard in ("0/2", "1/2"):  # two nodes, each with two processes
        out = huimages(sharded, "previews", "--all", "--jobs", "2", "--shard", shard).stdout
        made += int(out.split()[0])
    assert made == len(photos)  # each image in exactly one shard
    assert catalog_of(single) == catalog_of(sharded) == reference_catalog
    assert blobs_of(single) == blobs_of(sharded) == reference_blobs
    again = huimages(sharded, "previews", "--all", "--jobs", "2").stdout  # idempotent
    assert again.startswith(f"0 made, {len(photos)} already there")


#: Runs the command after it with SIGINT's default disposition, as a terminal gives it:
#: a suite started in the background by a script (``... &``) inherits SIGINT ignored, and
#: a command that starts with it ignored rightly never sees a Ctrl-C.
AS_IN_A_TERMINAL = [
    sys.executable, "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL);"
    " os.execv(sys.argv[1], sys.argv[1:])",
]


def test_ctrl_c_stops_cleanly_and_a_rerun_finishes(photos, tmp_path):
    many = []
    for n in range(24):
        path = tmp_path / f"p{n}.jpg"
        path.write_bytes(f.photo_jpeg(1400, 1000, seed=100 + n))
        many.append(str(path))
    # The third file is a named pipe: the worker that reads it waits until the test
    # writes it, after the Ctrl-C, so the run cannot end before the signal (the 23
    # others take about 0.4 s).
    held = Path(many[2])
    held_bytes = held.read_bytes()
    held.unlink()
    os.mkfifo(held)
    data = tmp_path / "data"
    process = subprocess.Popen(
        [*AS_IN_A_TERMINAL, str(BIN / "huimages"), "put", "--jobs", "2", *many],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "HUIMAGES_DATA_DIR": str(data)},
    )
    first = process.stdout.readline()  # one upload done: the pool is busy
    assert first.strip()
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does: the whole process group
    with open(held, "wb") as pipe:  # the step in flight finishes: none is left half done
        pipe.write(held_bytes)
    out, err = process.communicate(timeout=60)
    held.unlink()
    held.write_bytes(held_bytes)
    assert process.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    done = len([first, *out.split()])
    assert done < len(many)
    time.sleep(0.2)
    children = subprocess.run(["pgrep", "-g", str(process.pid)], capture_output=True)
    assert children.stdout == b""  # no worker left behind
    rerun = huimages(data, "put", "--jobs", "2", *many)
    assert len(rerun.stdout.split()) == len(many)
    reference = tmp_path / "reference"
    huimages(reference, "put", "--jobs", "1", *many)
    assert set(catalog_of(data)) == set(catalog_of(reference))
    assert blobs_of(data) == blobs_of(reference)


def test_migrate_sharded_with_jobs_moves_every_attachment_once(photos, tmp_path, s3_env, s3_server,
                                                               couch_server):
    config = backend_config("legacy", tmp_path / "data", s3_server, couch_server)
    legacy = backend_store("legacy", config)
    ids = [legacy.save_image(path.read_bytes()) for path in photos]
    assert not any(primary_has(legacy, imageid) for imageid in ids)
    env = {**s3_server.env, "HUIMAGES3BUCKET": config.s3_bucket or "",
           "HUIMAGESCOUCHSERVER": couch_server.url, "HUIMAGES_COUCHDB_NAME": config.couch_db}
    moved = 0
    for shard in ("0/2", "1/2"):
        out = huimages(tmp_path / "data", "migrate", "--jobs", "2", "--shard", shard,
                       env=env).stdout
        moved += int(out.split()[0])
    assert moved == len(ids)
    store = ImageStore(config)
    for imageid, path in zip(ids, photos, strict=True):
        assert primary_has(store, imageid)
        assert read_original(store, imageid) == path.read_bytes()
    again = huimages(tmp_path / "data", "migrate", "--jobs", "2", env=env).stdout
    assert again.startswith(f"0 moved, {len(ids)} already there")
