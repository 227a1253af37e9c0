#!/usr/bin/env python3
"""Overload and slow-client benchmark: the worker models of ``huimages serve`` side by side.

Usage (from the repository root)::

    .venv/bin/python bench/overload.py [--seconds 10] [--connections 200]

In one run, on one data dir (four 2400x1800 photos and one 8064x6048
uploaded with ``huimages put``), each configuration is started on 127.0.0.1
on a free port (and stopped again, with every process of its group), each
with a cache of its own, and asked the same sizes:

* ``sync, no admission``: gunicorn ``-k sync -w 2`` with
  ``HUIMAGES_RENDER_SLOTS=0``: every miss renders when its worker gets to it;
  the unguarded baseline for the work done;
* ``gthread 16``: stock gunicorn ``-k gthread -w 2 --threads 16``, no admission;
* ``huimages serve``: ``huimages serve --workers 2`` with its defaults (granian,
  256 threads per worker, admission by expected wait);
* ``gthread 64 + admission``, ``granian + admission``, ``waitress +
  admission``: the same app and admission (at its default queue of 48) under
  other servers, with 64 threads each.

Rows per configuration:

* overload: ``--connections`` asyncio clients on new connections, each asking
  again and again for a size never asked before for ``--seconds``; a client
  that gets a 503 waits 0.25 s. Completed renders/s, share of 503s,
  connection failures, p50/p99 of all answers, and p99/max of cache hits
  fetched meanwhile by a separate thread (one every 50 ms);
* slow clients: 64 connections that send half a request head, 64 that ask for
  a large original and read nothing, 64 that announce a 1 GB body and trickle
  it, each followed by 20 cache hits: how many were answered within 1 s;
* on ``huimages serve``, a storm of ``--decode-storm`` clients asking sizes of
  the 48 MP original that only a large decode serves: the answers, the
  slowest, and the workers' peak RSS.

Prints a table and writes it, with the raw figures, to
``bench/results/overload-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from huimages_wsgi.core.config import Config

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
BIN = Path(sys.executable).parent
HALF_OPEN = 64


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def photo(width: int, height: int, seed: int) -> bytes:
    """A deterministic photo-like JPEG (smooth gradients plus noise)."""
    from PIL import Image, ImageFilter

    noise = Image.effect_noise((width // 8, height // 8), 60 + seed).resize((width, height))
    gradient = Image.linear_gradient("L").resize((width, height))
    rgb = Image.merge("RGB", (noise, gradient, noise.filter(ImageFilter.BLUR)))
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=90)
    return out.getvalue()


APP = "huimages_wsgi:make_app()"
#: name -> (command with {port}, environment). "no admission" runs with
#: HUIMAGES_RENDER_SLOTS=0: every miss renders at once, whatever the load.
CONFIGS = {
    "sync, no admission": (["gunicorn", "-k", "sync", "-w", "2", "--timeout", "60",
                            "-b", "127.0.0.1:{port}", APP], {"HUIMAGES_RENDER_SLOTS": "0"}),
    "gthread 16": (["gunicorn", "-k", "gthread", "-w", "2", "--threads", "16",
                    "-b", "127.0.0.1:{port}", APP], {"HUIMAGES_RENDER_SLOTS": "0"}),
    "huimages serve": (["huimages", "serve", "--workers", "2", "--port", "{port}"], {}),
    "gthread 64 + admission": (["gunicorn", "-k", "gthread", "-w", "2", "--threads", "64",
                                "-b", "127.0.0.1:{port}", APP], {}),
    "granian + admission": (["granian", "--interface", "wsgi", "--workers", "2",
                             "--blocking-threads", "64", "--backlog", "2048",
                             "--http1-header-read-timeout", "5000",
                             "--host", "127.0.0.1", "--port", "{port}",
                             "--factory", "huimages_wsgi:make_app"], {}),
    "waitress + admission": (["waitress-serve", "--host=127.0.0.1", "--port={port}",
                              "--threads=64", "--connection-limit=2000", "--channel-timeout=10",
                              "--call", "huimages_wsgi:make_app"], {}),
}


class Server:
    def __init__(self, name: str, data_dir: Path, base: Path) -> None:
        command, env = CONFIGS[name]
        self.port = free_port()
        cache = base / f"cache-{len(os.listdir(base))}"
        self.env = {**os.environ, "HUIMAGES_DATA_DIR": str(data_dir),
                    "HUIMAGES_CACHE_DIR": str(cache), **env}
        command = [part.replace("{port}", str(self.port)) for part in command]
        self.log = open(base / f"server-{self.port}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen([str(BIN / command[0]), *command[1:]], env=self.env,
                                        stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1).close()
                return  # / answers (the browse page or what the server is)
            except urllib.error.HTTPError:
                return  # any HTTP answer means it is serving
            except OSError:
                time.sleep(0.1)
        self.stop()  # never leave a server behind that did not come up
        raise RuntimeError(f"{name} did not start")

    def stop(self) -> None:
        """Stop the server and every process of its group: a worker still busy with the
        storm's backlog must not steal the next configuration's CPU."""
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()


def get(port: int, path: str, timeout: float = 15.0) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


async def fetch(port: int, path: str, timeout: float) -> tuple[int, bool]:
    """(status, has Retry-After) on a new connection."""
    async def exchange() -> tuple[int, bool]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
            await reader.read()
            return int(head.split()[1]), "\r\nretry-after:" in head
        finally:
            writer.close()

    return await asyncio.wait_for(exchange(), timeout)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def overload(port: int, ids: list[str], hot: str, seconds: float, connections: int,
             offset: int) -> dict:
    counter = [offset]
    latencies: list[float] = []
    by_status: dict[int, list[float]] = {}
    statuses: dict[int, int] = {}
    failures: list[str] = []
    hits: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def client(number: int) -> None:
        while time.perf_counter() < stop_at:
            counter[0] += 1
            n = counter[0]
            path = f"/{300 + n % 997}x{200 + n // 997}/{ids[number % len(ids)]}.jpeg"
            began = time.perf_counter()
            try:
                status, _ = await fetch(port, path, 15.0)
            except (OSError, EOFError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
                failures.append(type(exc).__name__)
                continue
            latencies.append(time.perf_counter() - began)
            by_status.setdefault(status, []).append(latencies[-1])
            statuses[status] = statuses.get(status, 0) + 1
            if status == 503:
                await asyncio.sleep(0.25)

    def prober() -> None:
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            try:
                get(port, hot)
            except OSError:
                failures.append("hit")
                continue
            hits.append(time.perf_counter() - began)
            time.sleep(0.05)

    thread = threading.Thread(target=prober)
    started = time.perf_counter()
    thread.start()

    async def run() -> None:
        await asyncio.gather(*(client(n) for n in range(connections)))

    asyncio.run(run())
    thread.join()
    elapsed = time.perf_counter() - started
    total = sum(statuses.values())
    return {
        "seconds": elapsed, "answers": total, "statuses": statuses, "failures": len(failures),
        "failure_kinds": sorted(set(failures)),
        "renders_per_s": statuses.get(200, 0) / elapsed,
        "share_503": statuses.get(503, 0) / total if total else float("nan"),
        "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "p90_ms": percentile(latencies, 0.90) * 1000,
        "by_status_p50_p99_ms": {status: (statistics.median(values) * 1000,
                                          percentile(values, 0.99) * 1000)
                                 for status, values in by_status.items()},
        "hits": len(hits), "hit_p99_ms": percentile(hits, 0.99) * 1000,
        "hit_max_ms": max(hits, default=float("nan")) * 1000,
    }


def slow_senders(port: int, hot: str) -> dict:
    """64 connections that send half a request head and wait, then 20 hits."""
    socks = []
    for _ in range(HALF_OPEN):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: b\r\n")
        socks.append(sock)
    return _hits_meanwhile(port, hot, socks)


def slow_readers(port: int, big: str, hot: str) -> dict:
    """64 connections that ask for a large file and read nothing, then 20 hits."""
    socks = []
    for _ in range(HALF_OPEN):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {big} HTTP/1.1\r\nHost: b\r\n\r\n".encode())
        socks.append(sock)
    return _hits_meanwhile(port, hot, socks)


def trickling_bodies(port: int, hot: str) -> dict:
    """64 connections that announce a 1 GB body with an image request and trickle it."""
    socks = []
    for _ in range(HALF_OPEN):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(f"GET {hot} HTTP/1.1\r\nHost: b\r\nContent-Length: 1000000000\r\n"
                     f"\r\nx".encode())
        socks.append(sock)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(1.0):
            for sock in socks:
                try:
                    sock.send(b"x")
                except OSError:
                    pass

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        return _hits_meanwhile(port, hot, socks)
    finally:
        stop.set()
        thread.join()


def _hits_meanwhile(port: int, hot: str, socks: list[socket.socket]) -> dict:
    time.sleep(0.5)
    answered, slowest = 0, 0.0
    try:
        for _ in range(20):
            began = time.perf_counter()
            try:
                if get(port, hot, timeout=5) == 200 and time.perf_counter() - began <= 1.0:
                    answered += 1
            except OSError:
                pass
            slowest = max(slowest, time.perf_counter() - began)
    finally:
        for sock in socks:
            sock.close()
    return {"answered_of_20": answered, "slowest_ms": slowest * 1000}


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (a server's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def decode_storm(server: Server, imageid: str, seconds: float, connections: int,
                 wait: float) -> dict:
    """``connections`` clients asking sizes of one 48 MP original that no preview serves,
    each a large decode: the workers' peak RSS, and how long the slowest answer took."""
    counter = [0]
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < stop_at:
            counter[0] += 1
            n = counter[0]
            began = time.perf_counter()
            try:
                size = f"{3000 + n % 997}x{2200 + n // 997}"  # within the largest box
                status, _ = await fetch(server.port, f"/{size}/{imageid}.jpeg", 30.0)
            except (OSError, EOFError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                status = 0
            latencies.append(time.perf_counter() - began)
            statuses[status] = statuses.get(status, 0) + 1
            if status == 503:
                await asyncio.sleep(0.25)

    async def run() -> None:
        await asyncio.gather(*(client() for _ in range(connections)))

    asyncio.run(run())
    workers = children(server.process.pid)
    return {"statuses": statuses, "max_ms": max(latencies, default=0) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000, "within_s": wait + 1.0,
            "worker_peak_rss_mb": max((peak_rss_mb(pid) for pid in workers), default=0.0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS),
                        metavar="NAME", help="the configurations to run, in order")
    parser.add_argument("--decode-storm", type=int, default=40, metavar="CONNECTIONS",
                        help="then, on huimages serve, that many clients asking sizes of a"
                        " 48 MP original only a large decode serves (0: skip)")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="huimages-overload-"))
    rows = {}
    try:
        data_dir = base / "data"
        files = []
        for seed in range(4):
            path = base / f"photo{seed}.jpg"
            path.write_bytes(photo(2400, 1800, seed))
            files.append(str(path))
        put = subprocess.run([str(BIN / "huimages"), "--data-dir", str(data_dir), "put", *files],
                             capture_output=True, text=True, check=True)
        ids = put.stdout.split()
        hot = f"/240x160/{ids[0]}.jpeg"
        big = base / "camera48.jpg"
        big.write_bytes(photo(8064, 6048, 9))
        big_id = subprocess.run(
            [str(BIN / "huimages"), "--data-dir", str(data_dir), "put", str(big)],
            capture_output=True, text=True, check=True).stdout.strip()
        for name in args.configs:
            server = Server(name, data_dir, base)
            try:
                assert get(server.port, hot) == 200
                # the same sizes for every configuration, each on a cache of its own:
                # the same work, never asked before
                row = overload(server.port, ids, hot, args.seconds, args.connections, offset=0)
                time.sleep(2)  # let the last renders finish
                row["half_open"] = slow_senders(server.port, hot)
                row["slow_readers"] = slow_readers(server.port, f"/o/{ids[1]}.jpeg", hot)
                row["trickling"] = trickling_bodies(server.port, hot)
                if name == "huimages serve" and args.decode_storm:
                    wait = float(server.env.get("HUIMAGES_RENDER_WAIT") or Config().render_wait)
                    storm = decode_storm(server, big_id, args.seconds, args.decode_storm, wait)
                    rows["48 MP decode storm"] = storm
            finally:
                server.stop()
            rows[name] = row
            print(f"{name}: done", file=sys.stderr)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    header = (f"{'configuration':<24} {'renders/s':>9} {'503':>5} {'fail':>5} {'p50 ms':>7}"
              f" {'p99 ms':>7} {'hit p99':>8} {'hit max':>8} | hits within 1 s behind 64:"
              f" half-open, slow readers, trickling bodies")
    lines = [f"overload: {args.connections} connections x {args.seconds:.0f} s of sizes never"
             f" asked before; {os.cpu_count()} cores", header, "-" * len(header)]
    for name, r in rows.items():
        if "half_open" not in r:
            continue
        slow = ", ".join(f"{r[k]['answered_of_20']:>2}/20 ({r[k]['slowest_ms']:>5.0f} ms)"
                         for k in ("half_open", "slow_readers", "trickling"))
        lines.append(
            f"{name:<24} {r['renders_per_s']:>9.1f} {r['share_503']:>5.0%} {r['failures']:>5}"
            f" {r['p50_ms']:>7.0f} {r['p99_ms']:>7.0f} {r['hit_p99_ms']:>8.0f}"
            f" {r['hit_max_ms']:>8.0f} | {slow}")
    storm = rows.get("48 MP decode storm")
    if storm:
        lines.append(
            f"48 MP decode storm on huimages serve, {args.decode_storm} clients: answers"
            f" {storm['statuses']}, slowest {storm['max_ms']:.0f} ms (bound"
            f" {storm['within_s']:.1f} s), worker peak RSS {storm['worker_peak_rss_mb']:.0f} MB")
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"overload-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"table": table, "rows": rows, "args": vars(args)}, indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
