"""Load and fault test (issue #5, point 6) against ``huimages serve`` on loopback.

Sixteen client threads send a fixed, shuffled mix of 1200 requests to four
gunicorn workers: cached hits (signed, unsigned, SEO names, HEAD,
conditional), cold generations (many distinct sizes, some requested by
several clients at once), invalid paths, signature failures on uncached
variants and unknown IDs. Every request kind has the exact statuses it may
get; any 5xx fails. Every image answer, and afterwards every file in the
cache, must be a complete JPEG with the dimensions ``scaled_dimensions``
promises, and no temporary file may be left behind.

The figures are printed (``pytest -s``) so the run can be reported.
"""

from __future__ import annotations

import http.client
import io
import os
import queue
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from huimages_wsgi import Config, ImageStore
from huimages_wsgi.cache.admission import cpu_count
from huimages_wsgi.core.files import TEMP_SUFFIX
from huimages_wsgi.core.signing import sign
from huimages_wsgi.core.urls import image_path

from .. import imagefactory as f
from ..conftest import LiveServer

SECRET = "load-test-secret"
WORKERS = 4
CLIENTS = 16
REQUEST_TIMEOUT = 30.0
DEADLINE = 120.0  # the whole run of one test: a hang fails it instead of stalling CI
UNKNOWN_ID = "A" * 32 + "01"
HOT_SIZES = ("square", "240x160")
STAMPEDE = 6  # clients asking for one uncached variant at the same moment
CONNECTION_LOST = {"RemoteDisconnected", "IncompleteRead", "ConnectionResetError"}

# kind -> statuses it may get; nothing else is acceptable
EXPECTED = {
    "hit": {200},
    "hit-unsigned": {200},  # cached variants are public by design (see the README)
    "hit-seo": {200},
    "head": {200},
    "conditional": {304},
    "cold": {200},
    "cold-original": {200},
    "stampede": {200},
    "signature": {403},
    "unknown": {404},
    "invalid": {400, 404, 405},
}


@dataclass(frozen=True)
class Job:
    kind: str
    target: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    imageid: str = ""
    size: str = ""
    expect: frozenset[int] = frozenset()


@dataclass
class Outcome:
    job: Job
    status: int | None
    headers: Mapping[str, str] = field(default_factory=dict)  # case-insensitive from a server
    body: bytes = b""
    error: str = ""


def signed(imageid: str, size: str, title: str = "") -> str:
    return image_path(imageid, size, title=title, signature=sign(SECRET, size, imageid, "jpeg"))


def unsigned(imageid: str, size: str) -> str:
    return image_path(imageid, size)


def job(kind: str, target: str, imageid: str = "", size: str = "", **extra) -> Job:
    expect = frozenset(extra.pop("expect", EXPECTED[kind]))
    return Job(kind, target, imageid=imageid, size=size, expect=expect, **extra)


# -- the library of originals -----------------------------------------------------------


@dataclass
class Library:
    data_dir: Path
    store: ImageStore
    originals: dict[str, bytes]  # imageid -> bytes


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Library:
    data_dir = tmp_path_factory.mktemp("load") / "data"
    store = ImageStore(Config(data_dir=data_dir, secret=SECRET))
    originals = {}
    for data in (
        f.photo_jpeg(1600, 1200, seed=1),
        f.photo_jpeg(1200, 1600, seed=2),
        f.photo_jpeg(2400, 1800, seed=3),
        f.oriented_jpeg(6, 800, 400),
        f.grayscale_jpeg(640, 480),
        f.progressive_jpeg(1024, 768),
    ):
        originals[store.save_image(data, title="Load test")] = data
    return Library(data_dir, store, originals)


def start_server(library: Library, name: str) -> LiveServer:
    """A fresh server (and empty cache) over the shared originals."""
    cache = library.data_dir.parent / f"cache-{name}"
    env = {"HUIMAGES_SECRET": SECRET, "HUIMAGES_CACHE_DIR": str(cache)}
    return LiveServer(library.data_dir, env=env, workers=WORKERS).start()


def cache_root(server: LiveServer) -> Path:
    return Path(server.env["HUIMAGES_CACHE_DIR"])


# -- HTTP ----------------------------------------------------------------------------


def perform(port: int, job: Job) -> Outcome:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        conn.request(job.method, job.target, headers=dict(job.headers))
        response = conn.getresponse()
        body = response.read()
        return Outcome(job, response.status, response.msg, body)
    except (OSError, http.client.HTTPException) as exc:
        return Outcome(job, None, error=f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def run_load(
    port: int, jobs: list[Job], at: dict[int, Callable[[], None]] | None = None
) -> tuple[list[Outcome], float]:
    """Send ``jobs`` from CLIENTS threads; ``at[n]`` runs once n answers are in."""
    todo: queue.SimpleQueue[Job] = queue.SimpleQueue()
    for item in jobs:
        todo.put(item)
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    actions = dict(at or {})

    deadline = time.monotonic() + DEADLINE

    def client() -> None:
        while time.monotonic() < deadline:  # jobs left at the deadline stay unanswered
            try:
                item = todo.get_nowait()
            except queue.Empty:
                return
            outcome = perform(port, item)
            with lock:
                outcomes.append(outcome)
                action = actions.pop(len(outcomes), None)
            if action:
                action()

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()) + REQUEST_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "load run overran its deadline"
    assert len(outcomes) == len(jobs), f"{len(jobs) - len(outcomes)} requests not answered in time"
    return outcomes, time.perf_counter() - started


# -- the request mix -----------------------------------------------------------------


def cold_sizes(count: int, seed: int) -> Iterator[str]:
    """Distinct fit and crop boxes, none of them a hot size."""
    for i in range(count):
        width, height = 41 + 13 * i + seed, 31 + 9 * i
        yield f"{width}x{height}" + ("!" if i % 3 == 0 else "")


def invalid_targets(imageid: str) -> list[tuple[str, str, int]]:
    """(method, target, status): malformed requests, each with its exact answer."""
    return [
        ("GET", "/240x160/not-an-id.jpeg", 400),
        ("GET", f"/240x160/{imageid.lower()}.jpeg", 400),
        ("GET", f"/240x160/{imageid[:-1]}.jpeg", 400),
        ("GET", f"/abc/{imageid}.jpeg", 400),
        ("GET", f"/075x75/{imageid}.jpeg", 301),  # huImages' links move (test_huimages_compat)
        ("GET", f"/0x10/{imageid}.jpeg", 400),
        ("GET", f"/5000x5000/{imageid}.jpeg", 400),
        ("GET", f"/240x160/{imageid}.gif", 404),
        ("GET", f"/240x160/{imageid}.JPEG", 404),
        ("GET", f"/240x160/{imageid}", 301),
        ("GET", f"/240x160/{imageid}.jpeg/and/more", 301),
        ("GET", "/../../etc/passwd", 404),
        ("GET", "/o/..%2f..%2fetc%2fpasswd.jpeg", 404),
        ("GET", "/o/%2e%2e/%2e%2e/etc/passwd.jpeg", 404),
        ("GET", "/.locks/0001.jpeg", 400),
        ("GET", f"/o/.{imageid}.jpeg.tmp", 404),
        ("GET", "/%ff%fe%00/x", 404),
        ("GET", "//", 404),  # ("/" itself answers: the browse page or what the server is)
        ("GET", "/favicon.ico", 404),
        ("GET", "/" + "a" * 3000, 404),
        ("POST", signed(imageid, "240x160"), 405),
        ("DELETE", signed(imageid, "o"), 405),
    ]


def build_jobs(library: Library, validators: dict[tuple[str, str], dict[str, str]]) -> list[Job]:
    """The fixed mix: 1200 requests, shuffled with a fixed seed.

    ``validators`` holds the Last-Modified of every hot variant (the one validator:
    there is no ETag), from the warm-up requests.
    """
    rng = random.Random(5)
    ids = sorted(library.originals)
    hot = sorted(validators)
    units: list[list[Job]] = []  # a unit is sent back to back: a stampede is one unit

    def add(count: int, make: Callable[[int], Job]) -> None:
        units.extend([make(i)] for i in range(count))

    def cached(kind: str, url: Callable[[str, str], str], **extra) -> Callable[[int], Job]:
        return lambda i: job(kind, url(*hot[i % len(hot)]), *hot[i % len(hot)], **extra)

    add(330, cached("hit", signed))
    add(60, cached("hit-unsigned", unsigned))
    add(30, cached("hit-seo", lambda imageid, size: signed(imageid, size, title="Load test")))
    add(60, cached("head", signed, method="HEAD"))

    def conditional(i: int) -> Job:
        imageid, size = hot[i % len(hot)]
        header = ("If-None-Match", "*") if i % 2 else (
            "If-Modified-Since", validators[(imageid, size)]["Last-Modified"])
        return job("conditional", signed(imageid, size), imageid, size, headers=(header,))

    add(60, conditional)

    # cold: 174 distinct variants asked once, 6 originals, 20 variants asked 6 times at once
    cold = [(imageid, size) for imageid in ids for size in cold_sizes(29, seed=0)]
    units.extend([job("cold", signed(imageid, size), imageid, size)] for imageid, size in cold)
    units.extend([job("cold-original", signed(imageid, "o"), imageid, "o")] for imageid in ids)
    for i in range(20):
        imageid, size = ids[i % len(ids)], f"{300 + i}x{200 + i}"
        units.append([job("stampede", signed(imageid, size), imageid, size)] * STAMPEDE)

    # signature failures, always on variants nobody else asks for (so never cached)
    def bad_signature(i: int) -> Job:
        imageid, size = ids[i % len(ids)], f"{1000 + i}x{77}"
        target = [
            unsigned(imageid, size),
            unsigned(imageid, size) + "?sig=",
            unsigned(imageid, size) + "?sig=AAAAAAAAAAAAAAAAAAAAAA",
            unsigned(imageid, size) + "?sig=" + sign(SECRET, "240x160", imageid, "jpeg"),
            unsigned(imageid, size) + "?sig=" + sign("wrong-secret", size, imageid, "jpeg"),
            unsigned(imageid, size) + "?sig=%ff%fe" + "x" * 100,
        ][i % 6]
        return job("signature", target, imageid, size)

    add(120, bad_signature)

    def unknown(size: str) -> Job:
        return job("unknown", signed(UNKNOWN_ID, size), UNKNOWN_ID, size)

    add(60, lambda i: unknown(f"{50 + i}x50"))

    invalid = [entry for imageid in ids[:2] for entry in invalid_targets(imageid)]  # 44 distinct

    def malformed(i: int) -> Job:
        method, target, status = invalid[i % len(invalid)]
        return job("invalid", target, method=method, expect={status})

    add(180, malformed)
    rng.shuffle(units)
    jobs = [item for unit in units for item in unit]
    assert len(jobs) == 1200
    return jobs


def warm_up(port: int, library: Library) -> dict[tuple[str, str], dict[str, str]]:
    """Generate the hot variants once; keep their validators for conditional requests."""
    validators = {}
    for imageid in sorted(library.originals):
        for size in HOT_SIZES:
            outcome = perform(port, job("hit", signed(imageid, size), imageid, size))
            assert outcome.status == 200, outcome
            assert "ETag" not in outcome.headers, outcome
            validators[(imageid, size)] = {"Last-Modified": outcome.headers["Last-Modified"]}
    return validators


# -- checks ----------------------------------------------------------------------------


def check_jpeg(library: Library, data: bytes, imageid: str, size: str) -> None:
    """A complete JPEG of exactly the promised dimensions (originals: the same bytes)."""
    if size == "o":
        assert data == library.originals[imageid]
        return
    Image.open(io.BytesIO(data)).verify()
    img = Image.open(io.BytesIO(data))
    img.load()
    assert img.format == "JPEG" and img.mode in ("RGB", "L")
    assert img.size == library.store.scaled_dimensions(imageid, size), (imageid, size)


def check_outcomes(library: Library, outcomes: list[Outcome]) -> None:
    for outcome in outcomes:
        if outcome.status is None:
            continue  # connection failures are counted by the caller
        item = outcome.job
        assert outcome.status < 500, (item, outcome.body[:200])
        assert outcome.status in item.expect, (item, outcome.status, outcome.body[:200])
        if outcome.status == 304:
            assert outcome.body == b""
        elif outcome.status == 200 and item.method == "HEAD":
            assert outcome.body == b"" and int(outcome.headers["Content-Length"]) > 0
        elif outcome.status == 200:
            assert outcome.headers["Content-Type"] == "image/jpeg"
            check_jpeg(library, outcome.body, item.imageid, item.size)
        else:
            assert outcome.headers["Content-Type"].startswith("text/plain")


def check_cache(library: Library, root: Path, outcomes: list[Outcome]) -> int:
    """Every finished file is complete and correct; return the number of temporary files."""
    temporary = 0
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in (".locks", ".follower")]  # node state
        for name in files:
            path = Path(directory, name)
            if name.startswith("."):
                assert name.endswith(TEMP_SUFFIX), path
                temporary += 1
                continue
            imageid, _, ext = name.partition(".")
            assert ext == "jpeg" and path.parent.parent == root, path
            check_jpeg(library, path.read_bytes(), imageid, path.parent.name)
    for outcome in outcomes:
        item = outcome.job
        variant = root / item.size / f"{item.imageid}.jpeg"
        if item.kind in ("cold", "cold-original", "stampede") and outcome.status == 200:
            assert variant.is_file(), variant
        if item.kind in ("signature", "unknown"):
            assert not variant.exists(), variant  # a refused request never generates
    return temporary


def worker_pids(server: LiveServer) -> list[int]:
    """The server's workers: its children but the node's follower."""
    assert server.process is not None
    pid = server.process.pid
    children = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [child for child in children
            if b"follow" not in Path(f"/proc/{child}/cmdline").read_bytes()]


def busy_worker(server: LiveServer, attempts: int = 2000) -> int:
    """A worker on the CPU right now (most likely scaling an image), else any worker."""

    def running(pid: int) -> bool:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] == "R"

    pids = worker_pids(server)
    for _ in range(attempts):
        busy = [pid for pid in pids if running(pid)]
        if busy:
            return busy[0]
    return pids[0]


def _counts(counter: Counter) -> str:
    return ", ".join(f"{key}: {value}" for key, value in sorted(counter.items(), key=str))


def summary(title: str, outcomes: list[Outcome], elapsed: float) -> str:
    by_kind: dict[str, Counter] = {}
    for outcome in outcomes:
        key = outcome.status if outcome.status is not None else "reset"
        by_kind.setdefault(outcome.job.kind, Counter())[key] += 1
    statuses = Counter(o.status if o.status is not None else "reset" for o in outcomes)
    lines = [
        f"\n{title}: {len(outcomes)} requests, {CLIENTS} clients, {WORKERS} workers, "
        f"{elapsed:.2f} s, {len(outcomes) / elapsed:.0f} req/s",
        f"  statuses: {_counts(statuses)}",
    ]
    lines.extend(f"  {kind:<14} {_counts(counts)}" for kind, counts in sorted(by_kind.items()))
    return "\n".join(lines)


# -- the tests ---------------------------------------------------------------------------


def test_mixed_load_has_no_5xx_and_leaves_a_clean_cache(library):
    server = start_server(library, "load")
    try:
        validators = warm_up(server.port, library)
        jobs = build_jobs(library, validators)
        outcomes, elapsed = run_load(server.port, jobs)
    finally:
        server.stop()
    print(summary("load", outcomes, elapsed))
    assert len(outcomes) == len(jobs)
    assert [o.error for o in outcomes if o.status is None] == []
    check_outcomes(library, outcomes)
    assert check_cache(library, cache_root(server), outcomes) == 0
    log = server.log.read_text()
    assert "Traceback" not in log and not error_lines(log), log


def error_lines(log: str) -> list[str]:
    """Error lines of the server log, in the logfmt/JSON format (or the plain one)."""
    markers = ("level=error", '"level": "error"', "ERROR")
    return [line for line in log.splitlines() if any(m in line for m in markers)]


def test_a_worker_killed_mid_load_costs_at_most_its_own_connection(library):
    """SIGKILL one of four workers a third of the way through the same load.

    The kill can cost at most the requests the victim was answering, one per
    client at most: each such client sees its connection
    closed (no status line, or a body shorter than its Content-Length, so
    never a half image taken for a whole one). That is counted and printed as
    a reset and allowed once per client; it is never a 5xx, and every other
    request is answered as usual.
    The victim is picked on the CPU if possible, to catch it mid-scaling. If it
    was generating a variant, its hidden temporary file stays behind (nothing
    can clean up after SIGKILL) but no partial file ever becomes visible;
    ``huimages prune-cache`` removes such leftovers, which is checked too.
    """
    server = start_server(library, "fault")
    killed: list[int] = []

    def kill_a_worker() -> None:
        victim = busy_worker(server)
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)

    try:
        validators = warm_up(server.port, library)
        jobs = build_jobs(library, validators)
        outcomes, elapsed = run_load(server.port, jobs, at={400: kill_a_worker})
        deadline = time.monotonic() + 30
        while (len(set(worker_pids(server)) - set(killed)) < WORKERS
               or "Respawning worker-" not in server.log.read_text()):
            assert time.monotonic() < deadline, "the server did not replace the killed worker"
            time.sleep(0.1)
        after = warm_up(server.port, library)  # the hot variants are still served
        assert after == validators
        root = cache_root(server)
        leftovers = check_cache(library, root, outcomes)
        server.cli("prune-cache", "--max-bytes", "1G", "--stale-after", "0")
        remaining = check_cache(library, root, outcomes)
    finally:
        server.stop()
    resets = [o for o in outcomes if o.status is None]
    print(summary("fault (1 worker SIGKILLed after 400 answers)", outcomes, elapsed))
    print(f"  resets: {[o.error for o in resets]}; temporary files left by the kill: "
          f"{leftovers}, after prune-cache: {remaining}")
    assert len(killed) == 1 and len(outcomes) == len(jobs)
    assert len(resets) <= CLIENTS * len(killed)  # the victim's own connections only
    assert all(o.error.split(":")[0] in CONNECTION_LOST for o in resets), resets
    check_outcomes(library, outcomes)
    # at most one temporary file per render slot the victim held
    assert leftovers <= cpu_count() * len(killed) and remaining == 0
    log = server.log.read_text()
    errors = error_lines(log)
    assert len(errors) == 1 and "Unexpected exit from worker-" in errors[0], log
    assert "Traceback" not in log, log
