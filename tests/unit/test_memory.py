"""memory.py: renders on many threads in turn leave no decoded photo behind."""

import os
import subprocess
import sys
import textwrap

import pytest

from .. import imagefactory as f

pytestmark = pytest.mark.slow  # 12 MP renders on four threads, in a subprocess: 4 s

PROBE = textwrap.dedent("""
    import io, sys, threading
    from huimages_wsgi.imaging.memory import return_large_buffers
    from huimages_wsgi.imaging.engine import ImageEngine
    from huimages_wsgi.core.sizes import parse_size

    if sys.argv[2] == "fixed":
        assert return_large_buffers()
    data = open(sys.argv[1], "rb").read()
    engine, size = ImageEngine(), parse_size("3600x2700")

    def render():
        engine.render(io.BytesIO(data), size, io.BytesIO())

    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024

    render()
    before = rss()
    COUNT = 4
    # Four threads that stay alive, like a threaded worker's, render one after
    # another; each keeps whatever its malloc arena keeps. (Threads that exit
    # hand their arena to the next one, and what stays then depends on glibc's
    # trimming: 25 to 60 MB, too close to tell apart.)
    turns = [threading.Event() for _ in range(COUNT + 1)]
    finished = threading.Event()

    def worker(turn):
        turns[turn].wait()
        render()
        turns[turn + 1].set()
        finished.wait()

    threads = [threading.Thread(target=worker, args=(turn,)) for turn in range(COUNT)]
    for thread in threads:
        thread.start()
    turns[0].set()
    turns[COUNT].wait()
    print(before, rss())
    finished.set()
    for thread in threads:
        thread.join()
""")


def resident_after_threads(tmp_path, mode: str) -> tuple[int, int]:
    photo = tmp_path / "photo.jpeg"
    photo.write_bytes(f.photo_jpeg(4032, 3024, seed=3))
    # glibc's own defaults: an environment that tunes malloc (MALLOC_ARENA_MAX=2 is
    # common in containers) would share arenas between the threads
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("MALLOC_") and name != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", PROBE, str(photo), mode], env=env,
                         capture_output=True, text=True, check=True, timeout=120)
    before, after = map(int, out.stdout.split())
    return before, after


def test_renders_on_many_threads_keep_no_photo_per_thread(tmp_path):
    """With the threshold fixed, renders on four live threads in turn end where one
    did (a 12 MP photo decodes to 37 MB: keeping one per thread would show)."""
    before, after = resident_after_threads(tmp_path, "fixed")
    assert after - before < 30, (before, after)


def test_without_it_memory_stays_with_the_threads(tmp_path):
    """The control: glibc's default keeps freed photos in the threads' arenas, which is
    what the test above would miss if the probe could not see it."""
    before, after = resident_after_threads(tmp_path, "default")
    assert after - before >= 30, (before, after)
