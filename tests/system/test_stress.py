"""Slow clients and overload against the real servers (issue #12), on 127.0.0.1, bounded.

* ``huimages serve`` (granian, :mod:`huimages_wsgi.deploy.server`, two workers) with
  64 half-open connections, 64 slow readers of a large original and 16
  trickled upload bodies: a cache hit and a fresh render still answer within
  a second, the half-open connections are closed by the server after the
  header timeout, and the slow readers are still being served.
* A storm of 200 connections, each asking again and again for a size never
  asked before, for 10 s: no connection refused, reset or timed out; every
  answer a 200 or a 503 with ``Retry-After``; the 99th percentile of all
  answers under 3 s; cache hits asked meanwhile stay fast (their p99 is
  printed and bounded at 1 s).
* The same storm (and the half-open connections) through lighttpd in front
  of ``huimages fcgi``: hits answered by lighttpd, misses by the app.

Each on the embedded default and on S3 + CouchDB. The clients are asyncio
tasks on raw sockets, so the test process itself stays light.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from huimages_wsgi.deploy import webconfig

from .. import imagefactory as f
from ..conftest import LiveServer
from ..webservers import (
    HUIMAGES,
    FcgiBackend,
    WebServer,
    free_port,
    make_base_dir,
    remove_base_dir,
)

STORM_CONNECTIONS = 200
STORM_SECONDS = 10.0
CLIENT_TIMEOUT = 15.0  # an answer slower than this counts as a timeout
HALF_OPEN = 64
SLOW_READERS = 64
TRICKLED_UPLOADS = 16
HEADER_TIMEOUT = 10.0  # huimages_wsgi.deploy.server.HEADER_TIMEOUT
TOKEN = "stress-test-token"


# -- the nodes -------------------------------------------------------------------------


@dataclass
class Node:
    """Where to connect, and the images uploaded there."""

    port: int
    big: str  # a large original, for slow readers
    small: list[str]  # originals that render fast
    hot: str  # the URL of a cached variant
    log: Path
    counter: list[int] = field(default_factory=lambda: [0])

    def fresh_size(self) -> str:
        """A size nobody asked for before on this node."""
        self.counter[0] += 1
        n = self.counter[0]
        return f"{300 + n % 997}x{200 + n // 997}"


def backend_env(backend: str, request: pytest.FixtureRequest) -> dict[str, str]:
    if backend == "embedded":
        return {}
    s3 = request.getfixturevalue("s3_server")
    couch = request.getfixturevalue("couch_server")
    return {**s3.env, "HUIMAGES3BUCKET": s3.create_bucket(), "HUIMAGESCOUCHSERVER": couch.url,
            "HUIMAGES_COUCHDB_NAME": f"huimages_stress_{os.getpid()}_{free_port()}"}


def upload(env: dict[str, str], folder: Path) -> tuple[str, list[str]]:
    """``huimages put`` a large original and four others; (big ID, other IDs)."""
    files = [folder / "big.jpg"] + [folder / f"small{i}.jpg" for i in range(4)]
    files[0].write_bytes(f.photo_jpeg(4000, 3000, seed=3, quality=95))  # about 2 MB
    for i, path in enumerate(files[1:]):
        path.write_bytes(f.photo_jpeg(2400, 1800, seed=10 + i))
    result = subprocess.run([str(HUIMAGES), "put", *map(str, files)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    ids = result.stdout.split()
    return ids[0], ids[1:]


@pytest.fixture(scope="module", params=["embedded", "s3+couch"])
def served(request, tmp_path_factory) -> Iterator[tuple[LiveServer, Node]]:
    """``huimages serve`` with two workers and the default worker model."""
    base = tmp_path_factory.mktemp(f"stress-{request.param}")
    env = {**backend_env(request.param, request), "HUIMAGES_UPLOAD_TOKEN": TOKEN}
    server = LiveServer(base / "data", env=env, workers=2).start()
    try:
        big, small = upload(server.env, base)
        hot = f"/240x160/{small[0]}.jpeg"
        assert request_once(server.port, hot)[0] == 200
        assert request_once(server.port, f"/o/{big}.jpeg")[0] == 200  # cached for slow readers
        yield server, Node(server.port, big, small, hot, server.log)
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["embedded", "s3+couch"])
def behind_lighttpd(request) -> Iterator[Node]:
    """lighttpd (as ``huimages config lighttpd`` prints it) in front of ``huimages fcgi``."""
    base = make_base_dir("huimages-stress-")
    backend = server = None
    try:
        data_dir, cache_dir, run_dir = base / "data", base / "cache", base / "run"
        for directory in (cache_dir, run_dir):
            directory.mkdir(mode=0o755)
        if os.geteuid() == 0:  # lighttpd drops to www-data before opening its logs
            shutil.chown(run_dir, *webconfig.default_user_group())
        env = {**backend_env(request.param, request), "HUIMAGES_DATA_DIR": str(data_dir),
               "HUIMAGES_CACHE_DIR": str(cache_dir)}
        big, small = upload({**os.environ, **env}, base)
        # the backend first, and up: lighttpd marks a backend that refused it as down
        backend = FcgiBackend(socket_path=run_dir / "fcgi.sock", env=env,
                              log_path=base / "fcgi.log").start()
        port = free_port()
        config = subprocess.run(
            [str(HUIMAGES), "config", "lighttpd", "--cache-dir", str(cache_dir), "--port",
             str(port), "--run-dir", str(run_dir), "--fcgi-socket", backend.fcgi_socket],
            capture_output=True, text=True, timeout=60, check=True).stdout
        server = WebServer("lighttpd", config, run_dir, port).start()
        hot = f"/240x160/{small[0]}.jpeg"
        assert request_once(port, hot)[0] == 200
        assert request_once(port, hot)[0] == 200  # now from lighttpd's document root
        assert request_once(port, f"/o/{big}.jpeg")[0] == 200  # cached for slow readers
        yield Node(port, big, small, hot, base / "fcgi.log")
    finally:
        if server is not None:
            server.stop()
        if backend is not None:
            backend.stop()
        remove_base_dir(base)


# -- clients -------------------------------------------------------------------------


def request_once(port: int, path: str, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    return asyncio.run(fetch(port, path, timeout))


async def fetch(port: int, path: str, timeout: float = CLIENT_TIMEOUT,
                method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection; raises OSError/TimeoutError/EOFError on failure."""
    async def exchange() -> tuple[int, dict[str, str], bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         "Connection: close\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name:
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            body = await reader.readexactly(length) if method != "HEAD" else b""
            return status, headers, body
        finally:
            writer.close()

    try:
        return await asyncio.wait_for(exchange(), timeout)
    except asyncio.IncompleteReadError as exc:
        raise EOFError(f"connection closed early: {exc}") from None


def hit_once(port: int, path: str) -> int:
    """A blocking GET on a new connection; the status (the body is read and dropped)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except http.client.HTTPException as exc:
        raise OSError(f"{type(exc).__name__}: {exc}") from None
    finally:
        conn.close()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


# -- slow clients ------------------------------------------------------------------------


class SlowClients:
    """Half-open connections, slow readers and trickled uploads, held in one thread."""

    def __init__(self, node: Node, uploads: bool) -> None:
        self.node = node
        self.half_open: list[socket.socket] = []
        self.readers: list[socket.socket] = []
        self.uploads: list[socket.socket] = []
        self.read_bytes = Counter()
        self.stop = threading.Event()
        self.want_uploads = uploads
        self.thread = threading.Thread(target=self._trickle, daemon=True)

    def __enter__(self) -> SlowClients:
        port, node = self.node.port, self.node
        for _ in range(HALF_OPEN):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(f"GET /o/{node.big}.jpeg HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
            self.half_open.append(sock)
        for _ in range(SLOW_READERS):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a narrow window
            sock.settimeout(5)
            sock.connect(("127.0.0.1", port))
            sock.sendall(f"GET /o/{node.big}.jpeg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            self.readers.append(sock)
        for _ in range(TRICKLED_UPLOADS if self.want_uploads else 0):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(f"POST /_api/images HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         f"Authorization: Bearer {TOKEN}\r\nContent-Type: image/jpeg\r\n"
                         f"Content-Length: 100000\r\n\r\n".encode())
            self.uploads.append(sock)
        self.started = time.monotonic()
        self.thread.start()
        return self

    def _trickle(self) -> None:
        """Every half second: 1 KB read by each slow reader, one byte sent by each upload."""
        while not self.stop.wait(0.5):
            for sock in self.readers:
                try:
                    sock.settimeout(0.01)
                    self.read_bytes[sock.fileno()] += len(sock.recv(1024))
                except OSError:
                    pass
            for sock in self.uploads:
                try:
                    sock.send(b"\xff")
                except OSError:
                    pass

    def half_open_closed_by_server(self, until: float) -> int:
        """How many half-open connections the server has closed by ``until`` (monotonic)."""
        closed = 0
        for sock in self.half_open:
            sock.settimeout(max(0.1, until - time.monotonic()))
            try:
                closed += sock.recv(1) == b""
            except (ConnectionResetError, BrokenPipeError):
                closed += 1
            except OSError:
                pass
        return closed

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        for sock in self.half_open + self.readers + self.uploads:
            sock.close()


def probe(node: Node, path: str) -> tuple[float, int]:
    started = time.perf_counter()
    status, _, body = request_once(node.port, path, timeout=10)
    return time.perf_counter() - started, status


def check_slow_clients(node: Node, uploads: bool, wait_for_header_timeout: bool) -> int:
    """Probe hits and renders among the slow clients; the half-open ones closed since."""
    with SlowClients(node, uploads) as slow:
        time.sleep(1.0)  # every slow client is in place
        timings = []
        for round_ in range(4):
            timings.append(("hit", *probe(node, node.hot)))
            render = f"/{node.fresh_size()}/{node.small[round_ % len(node.small)]}.jpeg"
            timings.append(("render", *probe(node, render)))
            time.sleep(1.0)
        print(f"\nwith {HALF_OPEN} half-open, {SLOW_READERS} slow readers, "
              f"{len(slow.uploads)} trickled uploads: "
              + ", ".join(f"{kind} {seconds * 1000:.0f} ms" for kind, seconds, _ in timings))
        assert all(status == 200 for _, _, status in timings), timings
        assert max(seconds for _, seconds, _ in timings) < 1.0, timings
        # the header timeout, with room for a worker short of CPU; otherwise a look
        until = slow.started + HEADER_TIMEOUT + 10.0 if wait_for_header_timeout else 0.0
        closed = slow.half_open_closed_by_server(until)
        reading = sum(1 for count in slow.read_bytes.values() if count)
        print(f"  half-open connections closed by the server: {closed}/{HALF_OPEN}; "
              f"slow readers still receiving: {reading}/{SLOW_READERS}")
    assert reading == SLOW_READERS
    return closed


def test_slow_clients_do_not_stall_huimages_serve(served):
    server, node = served
    closed = check_slow_clients(node, uploads=True, wait_for_header_timeout=True)
    assert closed == HALF_OPEN  # the header timeout, 10 s
    log = server.log.read_text()
    assert "Traceback" not in log and "level=error" not in log, log[-3000:]


def test_slow_clients_do_not_stall_lighttpd_and_fcgi(behind_lighttpd):
    # lighttpd buffers, and times out heads itself (server.max-read-idle, 60 s)
    check_slow_clients(behind_lighttpd, uploads=False, wait_for_header_timeout=False)


# -- overload --------------------------------------------------------------------------------


@dataclass
class Storm:
    statuses: Counter
    latencies: list[float]
    failures: list[str]
    missing_retry_after: int
    hit_latencies: list[float]
    hit_statuses: Counter
    elapsed: float

    def summary(self, title: str) -> str:
        done = self.statuses[200]
        total = sum(self.statuses.values())
        return (
            f"\n{title}: {total} answers in {self.elapsed:.1f} s from {STORM_CONNECTIONS}"
            f" connections: {done} renders ({done / self.elapsed:.1f}/s),"
            f" 503: {self.statuses[503]} ({self.statuses[503] / max(total, 1):.0%}),"
            f" p50 {statistics.median(self.latencies or [0]) * 1000:.0f} ms,"
            f" p99 {percentile(self.latencies, 0.99) * 1000:.0f} ms;"
            f" hits meanwhile: {len(self.hit_latencies)},"
            f" p99 {percentile(self.hit_latencies, 0.99) * 1000:.0f} ms,"
            f" max {max(self.hit_latencies or [0]) * 1000:.0f} ms; failures {len(self.failures)}"
        )


async def storm(node: Node, seconds: float = STORM_SECONDS) -> Storm:
    statuses: Counter = Counter()
    latencies: list[float] = []
    failures: list[str] = []
    hit_latencies: list[float] = []
    hit_statuses: Counter = Counter()
    missing: list[int] = []
    started = time.perf_counter()
    stop_at = started + seconds

    async def client(number: int) -> None:
        while time.perf_counter() < stop_at:
            imageid = node.small[number % len(node.small)]
            path = f"/{node.fresh_size()}/{imageid}.jpeg"
            began = time.perf_counter()
            try:
                status, headers, _ = await fetch(node.port, path)
            except (OSError, EOFError, asyncio.TimeoutError) as exc:
                failures.append(f"{path}: {type(exc).__name__}: {exc}")
                continue
            latencies.append(time.perf_counter() - began)
            statuses[status] += 1
            if status == 503 and not headers.get("retry-after", "").isdigit():
                missing.append(1)
            if status == 503:
                await asyncio.sleep(0.25)  # backs off a little; Retry-After is for CDNs

    def hits() -> None:
        """In a thread of its own, so the storm's event loop does not delay it."""
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            try:
                status = hit_once(node.port, node.hot)
            except OSError as exc:
                failures.append(f"hit: {type(exc).__name__}: {exc}")
                continue
            hit_latencies.append(time.perf_counter() - began)
            hit_statuses[status] += 1
            time.sleep(0.05)

    prober = threading.Thread(target=hits)
    prober.start()
    await asyncio.gather(*(client(n) for n in range(STORM_CONNECTIONS)))
    prober.join()
    return Storm(statuses, latencies, failures, len(missing), hit_latencies, hit_statuses,
                 time.perf_counter() - started)


def check_storm(node: Node, title: str) -> Storm:
    result = asyncio.run(storm(node))
    print(result.summary(title))
    assert result.failures == [], result.failures[:10]
    assert set(result.statuses) <= {200, 503}, result.statuses
    assert result.statuses[200] > 0 and result.missing_retry_after == 0
    assert percentile(result.latencies, 0.99) < 3.0
    assert set(result.hit_statuses) == {200} and len(result.hit_latencies) > 20
    assert percentile(result.hit_latencies, 0.99) < 1.0
    return result


def test_overload_is_answered_fast_with_images_or_503(served):
    server, node = served
    check_storm(node, "huimages serve under a render storm")
    log = server.log.read_text()
    assert "Traceback" not in log and "level=error" not in log, log[-3000:]


def test_overload_behind_lighttpd(behind_lighttpd):
    check_storm(behind_lighttpd, "lighttpd + huimages fcgi under a render storm")
    log = behind_lighttpd.log.read_text()
    assert "Traceback" not in log, log[-3000:]
