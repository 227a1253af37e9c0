import os

import pytest

from huimages_wsgi.cache import Cache
from huimages_wsgi.cli import main
from huimages_wsgi.ids import compute_id
from huimages_wsgi.prune import prune_cache

NOW = 1_800_000_000.0


@pytest.fixture
def filled(tmp_path):
    """Ten 1000-byte variants; variant i was last used i hours before NOW."""
    cache = Cache(tmp_path / "cache")
    paths = []
    for i in range(10):
        path = cache.path("10x10" if i % 2 else "o", compute_id(bytes([i])))
        cache.produce(path, lambda out: out.write(b"x" * 1000))
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


def test_min_free_uses_the_filesystem(filled):
    cache, paths = filled
    fs = os.statvfs(cache.root)
    free = fs.f_bavail * fs.f_frsize
    report = prune_cache(cache, min_free=free + 2500, now=NOW)
    assert report.deleted_files >= 3  # at least 2500 bytes freed, oldest first
    assert not paths[-1].exists() and paths[0].exists()
    assert prune_cache(cache, min_free=1, now=NOW).deleted_files == 0


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
