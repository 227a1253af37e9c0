import threading
import time

import pytest

from huimages_wsgi.cache.directory import Cache
from huimages_wsgi.core.errors import GenerationBusy
from huimages_wsgi.core.ids import compute_id

IMAGE = compute_id(b"cache test")


def leftovers(root):
    return [p for p in root.rglob(".*") if p.is_file() and p.parent.name != ".locks"]


def test_layout_mirrors_the_url(tmp_path):
    cache = Cache(tmp_path)
    assert cache.path("75x75!", IMAGE) == tmp_path / "75x75!" / f"{IMAGE}.jpeg"


def test_produce_writes_atomically_and_once(tmp_path):
    cache = Cache(tmp_path)
    path = cache.path("o", IMAGE)
    made = cache.produce("o", IMAGE, "jpeg", lambda out: out.write(b"abc"))
    assert path.read_bytes() == b"abc" and made.stat.st_size == 3
    assert made.path == str(path) and made.relative == f"o/{IMAGE}.jpeg"
    cache.produce("o", IMAGE, "jpeg", lambda out: pytest.fail("must not make it again"))
    assert leftovers(tmp_path) == []


def test_failed_generation_leaves_nothing_behind(tmp_path):
    cache = Cache(tmp_path)
    path = cache.path("10x10", IMAGE)

    def fail(out):
        out.write(b"partial")
        raise ValueError("decoder exploded")

    with pytest.raises(ValueError):
        cache.produce("10x10", IMAGE, "jpeg", fail)
    assert not path.exists() and leftovers(tmp_path) == []


def test_concurrent_requests_generate_once(tmp_path):
    cache = Cache(tmp_path)
    path = cache.path("10x10", IMAGE)
    calls = []

    def slow(out):
        calls.append(1)
        time.sleep(0.3)
        out.write(b"done")

    key = ("10x10", IMAGE, "jpeg")
    threads = [threading.Thread(target=cache.produce, args=(*key, slow)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and path.read_bytes() == b"done"


def test_waiting_is_bounded(tmp_path):
    holder = Cache(tmp_path, lock_timeout=5)
    waiter = Cache(tmp_path, lock_timeout=0.2)
    path = holder.path("10x10", IMAGE)
    started, timed_out = threading.Event(), threading.Event()

    def hold(out):
        started.set()
        timed_out.wait(10)  # held until the waiter has given up
        out.write(b"x")

    thread = threading.Thread(target=holder.produce, args=("10x10", IMAGE, "jpeg", hold))
    thread.start()
    started.wait()
    try:
        with pytest.raises(GenerationBusy):
            waiter.produce("10x10", IMAGE, "jpeg", lambda out: out.write(b"y"))
    finally:
        timed_out.set()
        thread.join()
    assert path.read_bytes() == b"x"


def test_purge_removes_every_variant_of_one_image(tmp_path):
    cache = Cache(tmp_path)
    other = compute_id(b"other")
    for size in ("o", "10x10", "75x75!"):
        cache.produce(size, IMAGE, "jpeg", lambda out: out.write(b"1"))
    cache.produce("o", other, "jpeg", lambda out: out.write(b"2"))
    assert cache.purge(IMAGE) == 3
    assert not list(tmp_path.rglob(f"{IMAGE}*")) and cache.path("o", other).exists()
