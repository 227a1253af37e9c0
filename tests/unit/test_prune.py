import os

import pytest

from huimages_wsgi.cache.directory import Cache
from huimages_wsgi.cache.prune import prune_cache
from huimages_wsgi.cli.main import main
from huimages_wsgi.core.ids import compute_id

NOW = 1_800_000_000.0


@pytest.fixture
def filled(tmp_path):
    """Ten 1000-byte variants; variant i was last used i hours before NOW."""
    cache = Cache(tmp_path / "cache")
    paths = []
    for i in range(10):
        size, imageid = "10x10" if i % 2 else "o", compute_id(bytes([i]))
        path = cache.path(size, imageid)
        cache.produce(size, imageid, "jpeg", lambda out: out.write(b"x" * 1000))
        used = NOW - i * 3600
        os.utime(path, (used, used))
        paths.append(path)
    return cache, paths


def test_max_bytes_deletes_least_recently_used_first(filled):
    cache, paths = filled
    report = prune_cache(cache, max_bytes=6500, now=NOW)
    assert report.deleted_files == 4 and report.deleted_bytes == 4000
    assert [p.exists() for p in paths] == [True] * 6 + [False] * 4
    assert "deleted 4 files" in report.summary()


def test_dry_run_deletes_nothing(filled):
    cache, paths = filled
    report = prune_cache(cache, max_bytes=0, dry_run=True, now=NOW)
    assert report.deleted_files == 10 and all(p.exists() for p in paths)
    assert "would delete 10 files" in report.summary()


def test_min_free_deletes_least_recently_used_first_until_enough_is_free(filled):
    """2500 bytes short of ``min_free``: the three oldest 1000-byte variants go."""
    cache, paths = filled
    report = prune_cache(cache, min_free=10**6 + 2500, now=NOW, free_bytes=lambda _: 10**6)
    assert report.deleted_files == 3 and report.deleted_bytes == 3000
    assert [p.exists() for p in paths] == [True] * 7 + [False] * 3


def test_min_free_reads_the_cache_s_filesystem(filled):
    """The real filesystem (shared with everything else on this machine, so its free
    space moves): enough free deletes nothing, more than the disk holds deletes all."""
    cache, paths = filled
    assert prune_cache(cache, min_free=1, now=NOW).deleted_files == 0
    fs = os.statvfs(cache.root)
    report = prune_cache(cache, min_free=fs.f_blocks * fs.f_frsize + 1, now=NOW)
    assert report.deleted_files == 10 and not any(p.exists() for p in paths)


def test_stale_temporary_files_are_removed_fresh_ones_kept(filled):
    cache, _ = filled
    stale = cache.root / "o" / ".ABC.jpeg.x1.tmp"
    fresh = cache.root / "o" / ".DEF.jpeg.x2.tmp"
    for path, age in ((stale, 7200), (fresh, 10)):
        path.write_bytes(b"partial")
        os.utime(path, (NOW - age, NOW - age))
    report = prune_cache(cache, max_bytes=10**9, now=NOW)
    assert report.stale_temp_files == 1 and not stale.exists() and fresh.exists()
    assert report.deleted_files == 0


def test_open_file_stays_readable_while_pruned(filled):
    cache, paths = filled
    with open(paths[-1], "rb") as reader:
        prune_cache(cache, max_bytes=0, now=NOW)
        assert not paths[-1].exists()
        assert reader.read() == b"x" * 1000


def test_lock_stripes_and_symlinks_are_left_alone(filled, tmp_path):
    cache, _ = filled
    outside = tmp_path / "precious"
    outside.write_text("keep me")
    os.symlink(outside, cache.root / "o" / "link.jpeg")
    prune_cache(cache, max_bytes=0, now=NOW)
    assert outside.read_text() == "keep me" and cache.lock_dir.exists()


def test_cli(filled, monkeypatch, capsys, tmp_path):
    cache, paths = filled
    monkeypatch.setenv("HUIMAGES_CACHE_DIR", str(cache.root))
    monkeypatch.setenv("HUIMAGES_DATA_DIR", str(tmp_path / "data"))
    assert main(["prune-cache", "--max-bytes", "5K", "--dry-run", "--list"]) == 0
    out = capsys.readouterr().out
    assert "would delete" in out and str(paths[-1]) in out
    assert main(["prune-cache", "--max-bytes", "5K"]) == 0
    assert sum(p.exists() for p in paths) == 5
    with pytest.raises(SystemExit):
        main(["prune-cache"])


def test_files_vanishing_while_pruning_are_skipped(filled, monkeypatch):
    """The server renames temporaries and purges variants while a prune lists them."""
    cache, paths = filled
    real_scandir = os.scandir
    listed = []

    class RacingScandir:
        def __init__(self, directory):
            self.inner = real_scandir(directory)

        def __enter__(self):
            entries = list(self.inner.__enter__())
            listed.append(entries)
            for entry in entries[:1]:  # gone between the listing and the stat
                os.unlink(entry.path)
            return iter(entries)

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

        def __iter__(self):  # the cache root's listing (Cache.size_dirs): no race there
            return iter(self.inner)

    monkeypatch.setattr("huimages_wsgi.cache.prune.os.scandir", RacingScandir)
    report = prune_cache(cache, max_bytes=0, now=NOW)
    assert len(listed) == 2  # both size directories were listed
    assert report.scanned_files == 8 and report.deleted_files == 8
    assert not any(p.exists() for p in paths)


def test_recent_access_keeps_an_old_file(filled):
    """max(atime, mtime): a variant generated long ago but read just now is kept."""
    cache, paths = filled
    os.utime(paths[9], (NOW, NOW - 9 * 3600))  # read now, written nine hours ago
    report = prune_cache(cache, max_bytes=9000, now=NOW)
    assert report.deleted_files == 1 and paths[9].exists() and not paths[8].exists()
