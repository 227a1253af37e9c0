#!/usr/bin/env python3
"""huimages-wsgi benchmark, side by side with thumbor.

Usage (from the repository root; ``make bench`` runs the full mode)::

    .venv/bin/python bench/run.py [--photo PATH] [--quick]
                                  [--requests N] [--concurrency C]

What it does, in one run (every server binds to 127.0.0.1 on a free port and
is stopped again on exit, Ctrl-C or error):

* uses ``--photo`` or generates a deterministic phone-like photo, 4032x3024
  JPEG q90 stored upside down with EXIF orientation 3, as
  ``bench/results/phone-4032x3024-o3.jpg``;
* installs thumbor 7.x into ``bench/.thumbor-venv`` if it is missing and runs
  it with 2 processes, file loader, no storage, no result storage, PIL
  engine, QUALITY 85, baseline JPEG, no WebP;
* runs ``huimages serve --workers 2`` on a temporary data dir holding N
  copies of the photo (same pixels, different bytes: a JPEG COM segment
  after SOI), so every cold request renders a variant nobody rendered before;
* cold rows: N requests per system and size, split into rounds interleaved
  huimages/thumbor/floor (ABBA order), huimages' cache dir for the size
  cleared before each of its rounds, thumbor reading the same N copies;
* cold rows over grids of sizes never asked before (``GRIDS``): every request
  a different box of its size class and a different copy, against thumbor;
* decode floor: the photo opened with the ``draft`` huimages chooses for the
  size and ``load()``-ed, nothing else, in 2 processes at once (the server
  has 2 workers on this 2-core machine, so server req/s is compared with the
  aggregate images/s of 2 concurrent decoders);
* warm rows: one cached variant fetched with wrk (C, 2 threads, 4
  connections, fixed duration) through the huimages middleware and through
  a bare WSGI app (gunicorn, 2 workers) returning the same file via
  ``wsgi.file_wrapper``; interleaved ABBA;
* peak RSS (VmHWM) of every gunicorn worker after the cold rounds;
* what an upload costs: ``save_image`` per photo against ``Image.open().load()``
  of the same bytes (target at most 2.5x), and (information rows) without
  previews, and the bytes they add per photo.

Prints one table and writes it, with all raw numbers, to
``bench/results/bench-<timestamp>.json``. ``--quick`` is a smoke test
(well under a minute); the full mode takes a few minutes.
See bench/README.md for how to read the table.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import itertools
import json
import multiprocessing
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
THUMBOR_VENV = BENCH / ".thumbor-venv"
HOST = "127.0.0.1"
SIZES = ("240x160", "75x75!", "1024x768")
THUMBOR_PATHS = {
    "240x160": "/unsafe/fit-in/240x160/{name}",
    "75x75!": "/unsafe/75x75/{name}",
    "1024x768": "/unsafe/fit-in/1024x768/{name}",
}
# huimages / thumbor, at least (cold rows)
COLD_TARGETS = {"240x160": 2.5, "75x75!": 8.0, "1024x768": 1.8}

# "Sizes never asked before" (issue 15): per size class a grid of distinct boxes, so no
# request of a round is a cache hit for either side. name -> (widths, heights, crop?,
# thumbor path, target ratio against thumbor).
GRIDS: dict[str, tuple[range, range, bool, str, float]] = {
    "fit 1000-1099x700-799": (range(1000, 1100), range(700, 800), False,
                              "/unsafe/fit-in/{w}x{h}/{name}", 3.0),
    "fit 230-259x150-179": (range(230, 260), range(150, 180), False,
                            "/unsafe/fit-in/{w}x{h}/{name}", 4.0),
    "crop 90-119x90-119!": (range(90, 120), range(90, 120), True,
                            "/unsafe/{w}x{h}/{name}", 20.0),
}
GRID_SEED = 15


def grid_boxes(grid: str, count: int) -> list[tuple[int, int]]:
    """``count`` distinct (width, height) boxes of one grid, in a fixed pseudo-random order."""
    widths, heights, _, _, _ = GRIDS[grid]
    pairs = [(w, h) for w in widths for h in heights]
    return random.Random(GRID_SEED).sample(pairs, min(count, len(pairs)))


def grid_size(grid: str, box: tuple[int, int]) -> str:
    """The huimages size spelling of one box of a grid (``WxH`` or ``WxH!``)."""
    return f"{box[0]}x{box[1]}" + ("!" if GRIDS[grid][2] else "")
FLOOR_TARGET = 0.70  # huimages cold req/s / aggregate decode-floor img/s
WARM_TARGET = 0.90  # middleware hit req/s / bare file_wrapper app req/s
UPLOAD_TARGET = 2.5  # save_image ms / Image.open().load() ms of the same bytes, at most
RSS_TARGET_MB = 200.0
# A box too big for any preview and for DCT scaling: every render decodes the whole
# photo, so the memory row covers a full-size decode, not only preview renders.
RSS_PROBE_SIZE = "3600x2700"
RSS_PROBE_COUNT = 8
FLOOR_PROCESSES = 2
WARM_SIZE = "240x160"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def venv_bin(name: str) -> Path:
    """A console script next to the interpreter running us (the project venv)."""
    candidate = Path(sys.executable).parent / name
    return candidate if candidate.exists() else ROOT / ".venv" / "bin" / name


# -- the photo -------------------------------------------------------------------------


def make_photo(path: Path, width: int = 4000, height: int = 3000) -> None:
    """A deterministic photo-like JPEG: gradients, blurred noise, soft shapes, grain."""
    rng = random.Random(20240601)

    def noise(w: int, h: int) -> Image.Image:
        return Image.frombytes("L", (w, h), rng.randbytes(w * h))

    size = (width, height)
    base = Image.merge(
        "RGB",
        (
            Image.linear_gradient("L").resize(size),
            Image.radial_gradient("L").resize(size),
            Image.linear_gradient("L").rotate(90).resize(size),
        ),
    )
    texture = [noise(width // 16, height // 16).resize(size, Image.Resampling.BICUBIC)]
    texture += [noise(width // 16, height // 16).resize(size, Image.Resampling.BICUBIC)]
    texture += [noise(width // 16, height // 16).resize(size, Image.Resampling.BICUBIC)]
    base = Image.blend(base, Image.merge("RGB", texture), 0.35)
    draw = ImageDraw.Draw(base)
    for _ in range(60):
        x, y = rng.randrange(width), rng.randrange(height)
        s = rng.randrange(width // 50, width // 6)
        colour = tuple(rng.randrange(256) for _ in range(3))
        kind = rng.randrange(3)
        if kind == 0:
            draw.ellipse((x, y, x + s, y + s * 0.7), fill=colour)
        elif kind == 1:
            draw.rectangle((x, y, x + s, y + s // 2), fill=colour)
        else:
            draw.polygon(
                [(x, y), (x + s, y + rng.randrange(-s, s)), (x + rng.randrange(-s, s), y + s)],
                fill=colour,
            )
    base = base.filter(ImageFilter.GaussianBlur(2))
    mid = noise(width // 3, height // 3).resize(size, Image.Resampling.BILINEAR)
    base = Image.blend(base, Image.merge("RGB", [mid] * 3), 0.12)
    grain = noise(width, height).filter(ImageFilter.GaussianBlur(0.7))
    base = Image.blend(base, Image.merge("RGB", [grain] * 3), 0.10)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    base.save(tmp, "JPEG", quality=90)
    os.replace(tmp, path)


PHONE_SIZE = (4032, 3024)  # a 12.2 MP phone sensor, stored landscape
PHONE_ORIENTATION = 3  # the phone held the other way up: viewers turn it 180 degrees


def default_photo() -> Path:
    """The bench's phone-like photo (made once): 4032x3024 JPEG q90, 4:2:0, stored upside
    down with EXIF orientation 3 and a camera's tags, like a phone's landscape shot."""
    path = RESULTS / f"phone-{PHONE_SIZE[0]}x{PHONE_SIZE[1]}-o{PHONE_ORIENTATION}.jpg"
    if not path.exists():
        log(f"generating {path}")
        upright = RESULTS / "upright.tmp.jpg"
        make_photo(upright, *PHONE_SIZE)
        with Image.open(upright) as img:
            img.load()
            exif = Image.Exif()
            exif[0x0112] = PHONE_ORIENTATION
            exif[0x010F] = "huimages bench"  # Make
            exif[0x0110] = "phone-like 12 MP"  # Model
            exif[0x0132] = "2026:12:01 12:00:00"  # DateTime
            tmp = path.with_suffix(".tmp")
            img.transpose(Image.Transpose.ROTATE_180).save(
                tmp, "JPEG", quality=90, subsampling="4:2:0", exif=exif.tobytes()
            )
        os.replace(tmp, path)
        upright.unlink()
    return path


def with_comment(data: bytes, text: str) -> bytes:
    """Same pixels, different bytes: a COM segment right after SOI."""
    if data[:2] != b"\xff\xd8":
        raise SystemExit("the photo is not a JPEG")
    payload = text.encode()
    return data[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + data[2:]


# -- processes -------------------------------------------------------------------------


class Server:
    """A server process in its own session; stopped by its process group id."""

    running: list[Server] = []

    def __init__(self, name: str, cmd: list[str], port: int, logfile: Path, **kw: Any) -> None:
        self.name, self.cmd, self.port, self.logfile = name, cmd, port, logfile
        self.handle = open(logfile, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd, stdout=self.handle, stderr=subprocess.STDOUT, start_new_session=True, **kw
        )
        Server.running.append(self)

    def wait_ready(self, path: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: see {self.logfile}")
            try:
                conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
                conn.request("GET", path)
                conn.getresponse().read()
                conn.close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer within {timeout}s: see {self.logfile}")

    def children(self) -> list[int]:
        """Direct children serving requests (gunicorn workers, thumbor's forked processes);
        not huimages' change-feed follower, which the master also starts."""
        return [pid for pid in children_of(self.proc.pid) if not _is_follower(pid)]

    def stop(self) -> None:
        if self in Server.running:
            Server.running.remove(self)
        pgid = self.proc.pid  # start_new_session: the group id is the leader's pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        # workers normally exit with their master; make sure none outlived it
        for _ in range(50):
            if not processes_in_group(pgid):
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        self.handle.close()

    @classmethod
    def stop_all(cls) -> None:
        for server in list(cls.running):
            try:
                server.stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                log(f"could not stop {server.name}: {exc}")


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from 'state' on


def _is_follower(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"\0follow\0" in handle.read()
    except OSError:
        return False


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _proc_stat(int(entry))
            if fields and int(fields[1]) == pid:
                found.append(int(entry))
    return sorted(found)


def processes_in_group(pgid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _proc_stat(int(entry))
            if fields and int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry))
    return found


def cpu_seconds(pid: int) -> float:
    fields = _proc_stat(pid)
    if not fields:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# -- thumbor ---------------------------------------------------------------------------


def _script_runs_here(script: Path) -> bool:
    """Whether the interpreter named on ``script``'s ``#!`` line exists (a venv that was
    moved keeps scripts pointing at its old place)."""
    first = script.read_bytes().split(b"\n", 1)[0]
    return first.startswith(b"#!") and Path(first[2:].decode().split()[0]).exists()


def ensure_thumbor() -> tuple[Path, str]:
    thumbor = THUMBOR_VENV / "bin" / "thumbor"
    if thumbor.exists() and not _script_runs_here(thumbor):
        log(f"{THUMBOR_VENV} was made in another place (a moved checkout): making it again")
        shutil.rmtree(THUMBOR_VENV)
    if not thumbor.exists():
        log(f"installing thumbor 7.x into {THUMBOR_VENV} (once)")
        subprocess.run([sys.executable, "-m", "venv", str(THUMBOR_VENV)], check=True)
        pip = [str(THUMBOR_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "-U", "pip"], check=True)
        subprocess.run([*pip, "thumbor>=7,<8"], check=True)
    version = subprocess.run(
        [
            str(THUMBOR_VENV / "bin" / "python"),
            "-c",
            "import thumbor, PIL; print(thumbor.__version__, PIL.__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return thumbor, f"thumbor {version[0]} (Pillow {version[1]})"


THUMBOR_CONF = """\
# generated by bench/run.py
LOADER = 'thumbor.loaders.file_loader'
FILE_LOADER_ROOT_PATH = {root!r}
STORAGE = 'thumbor.storages.no_storage'
RESULT_STORAGE = None
ENGINE = 'thumbor.engines.pil'
ALLOW_UNSAFE_URL = True
QUALITY = 85
PROGRESSIVE_JPEG = False          # huimages writes baseline JPEG
AUTO_WEBP = False
AUTO_AVIF = False
AUTO_HEIF = False
AUTO_JPG = False
AUTO_PNG = False
RESPECT_ORIENTATION = True        # huimages applies EXIF orientation
PRESERVE_EXIF_INFO = False
OPTIMIZERS = []
DETECTORS = []
ENGINE_THREADPOOL_SIZE = 0
"""


# -- the load generator ----------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def run_load(
    port: int, paths: list[str], concurrency: int, time_limit: float, keepalive: bool
) -> dict[str, Any]:
    """GET every path once with ``concurrency`` threads; stop starting new ones at the limit."""
    counter = itertools.count()
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + time_limit
    headers = {} if keepalive else {"Connection": "close"}

    def worker() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=120)
        while True:
            index = next(counter)
            if index >= len(paths) or time.perf_counter() > deadline:
                break
            start = time.perf_counter()
            try:
                conn.request("GET", paths[index], headers=headers)
                response = conn.getresponse()
                body = response.read()
                elapsed = time.perf_counter() - start
                problem = None
                if response.status != 200:
                    problem = f"HTTP {response.status}: {body[:80]!r}"
                elif response.getheader("Content-Type", "").split(";")[0] != "image/jpeg":
                    problem = f"Content-Type {response.getheader('Content-Type')}"
                elif body[:2] != b"\xff\xd8" or body[-2:] != b"\xff\xd9":
                    problem = "body is not a JPEG"
                if response.will_close:
                    conn.close()
            except (OSError, http.client.HTTPException) as exc:
                elapsed, problem = None, f"{type(exc).__name__}: {exc}"
                conn.close()
            with lock:
                if problem:
                    errors.append(problem)
                else:
                    latencies.append(elapsed)
        conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.2)
    wall = time.perf_counter() - started
    not_run = max(0, len(paths) - len(latencies) - len(errors))
    return {
        "requests": len(paths),
        "ok": len(latencies),
        "errors": len(errors) + not_run,
        "error_samples": errors[:5] + ([f"{not_run} not run: time limit"] if not_run else []),
        "wall_s": wall,
        "latencies_s": latencies,
    }


def merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [x for r in rounds for x in r["latencies_s"]]
    wall = sum(r["wall_s"] for r in rounds)
    ok = sum(r["ok"] for r in rounds)
    return {
        "rps": ok / wall if wall else 0.0,
        "p50_ms": _ms(percentile(latencies, 50)),
        "p99_ms": _ms(percentile(latencies, 99)),
        "ok": ok,
        "errors": sum(r["errors"] for r in rounds),
        "error_samples": [e for r in rounds for e in r.get("error_samples", [])][:5],
        "wall_s": wall,
        "rounds": len(rounds),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


WRK_LUA = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; bad = 0 end
function response(status, headers, body)
  local ctype = ""
  for k, v in pairs(headers) do
    if string.lower(k) == "content-type" then ctype = v end
  end
  if status == 200 and ctype == "image/jpeg" and string.sub(body, 1, 2) == "\255\216" then
    ok = ok + 1
  else
    bad = bad + 1
  end
end
function done(summary, latency, requests)
  local ok, bad = 0, 0
  for _, t in ipairs(threads) do ok = ok + t:get("ok"); bad = bad + t:get("bad") end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "ok": %d, "bad": %d, "connect": %d, ' ..
    '"read": %d, "write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, ok, bad, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(wrk: str, script: Path, url: str, seconds: float, connections: int) -> dict[str, Any]:
    cmd = [
        wrk,
        "-t2",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    data = json.loads(line[len("WRKJSON ") :])
    socket_errors = data["connect"] + data["read"] + data["write"] + data["timeout"]
    return {
        "ok": data["ok"],
        "errors": data["bad"] + socket_errors,
        "wall_s": data["duration_us"] / 1e6,
        "p50_ms": data["p50_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
        "raw": data,
    }


def merge_wrk(runs: list[dict[str, Any]]) -> dict[str, Any]:
    wall = sum(r["wall_s"] for r in runs)
    ok = sum(r["ok"] for r in runs)
    p50s = sorted(r["p50_ms"] for r in runs)
    p99s = sorted(r["p99_ms"] for r in runs)
    per_run = [r["ok"] / r["wall_s"] for r in runs]
    return {
        # The median run: a few seconds of other work on the machine during one
        # run must not decide a row (the total is kept as rps_overall).
        "rps": statistics.median(per_run),
        "rps_overall": ok / wall if wall else 0.0,
        "p50_ms": p50s[len(p50s) // 2],  # median of the runs' percentiles
        "p99_ms": p99s[len(p99s) // 2],
        "ok": ok,
        "errors": sum(r["errors"] for r in runs),
        "wall_s": wall,
        "rounds": len(runs),
        "rps_per_run": per_run,
    }


# -- the decode floor ------------------------------------------------------------------


class _Decoded(Exception):
    """Raised by the floor's phase hook once ``render`` has decoded: nothing more is done."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__(size)
        self.size = size


def _decode_once(engine: Any, data: bytes, size: Any) -> tuple[int, int]:
    """Open + the draft huimages chooses for ``size`` + load(); no resize, no encode.

    ``render`` itself, stopped by its public ``phase`` hook when the decode ends."""

    def stop_after_decode(name: str, img: Any) -> None:
        if name == "decode":
            raise _Decoded(img.size)

    try:
        engine.render(io.BytesIO(data), size, io.BytesIO(), phase=stop_after_decode)
    except _Decoded as decoded:
        return decoded.size
    raise RuntimeError("render finished without a decode step")


def _floor_worker(data: bytes, size_text: str, count: int, start_at: float, queue: Any) -> None:
    from huimages_wsgi.core.sizes import parse_size
    from huimages_wsgi.imaging.engine import ImageEngine

    engine, size = ImageEngine(), parse_size(size_text)
    decoded = _decode_once(engine, data, size)  # warm-up (imports, lazy tables)
    while time.perf_counter() < start_at:
        time.sleep(0.001)
    times = []
    begin = time.perf_counter()
    for _ in range(count):
        t0 = time.perf_counter()
        _decode_once(engine, data, size)
        times.append(time.perf_counter() - t0)
    end = time.perf_counter()
    queue.put((begin, end, times, decoded, vm_kb(os.getpid(), "VmHWM")))


def run_floor(data: bytes, size_text: str, count: int, processes: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    start_at = time.perf_counter() + 0.5
    procs = [
        ctx.Process(target=_floor_worker, args=(data, size_text, count, start_at, queue))
        for _ in range(processes)
    ]
    finished = False
    try:
        for proc in procs:
            proc.start()
        results = [queue.get(timeout=600) for _ in procs]
        finished = True
    finally:
        for proc in procs:
            if not finished and proc.is_alive():  # interrupted: stop our own child by pid
                proc.terminate()
            proc.join(30)
    begin = min(r[0] for r in results)
    end = max(r[1] for r in results)
    times = [t for r in results for t in r[2]]
    return {
        "ok": len(times),
        "errors": 0,
        "wall_s": end - begin,
        "latencies_s": times,
        "decoded_size": list(results[0][3]),
        "single_rate": [len(r[2]) / (r[1] - r[0]) for r in results],
        "peak_rss_mb": max((r[4] or 0) for r in results) / 1024,
    }


# -- the run ---------------------------------------------------------------------------


def upload_copies(
    photo: Path, count: int, work: Path, data_dir: Path
) -> tuple[Path, list[str], list[str]]:
    data = photo.read_bytes()
    copies = work / "photos"
    copies.mkdir()
    names = []
    for i in range(count):
        name = f"copy-{i:04d}.jpg"
        (copies / name).write_bytes(with_comment(data, f"huimages bench copy {i}"))
        names.append(name)
    started = time.perf_counter()
    result = subprocess.run(
        [
            str(venv_bin("huimages")),
            "--data-dir",
            str(data_dir),
            "put",
            *[str(copies / n) for n in names],
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    ids = result.stdout.split()
    if result.returncode != 0 or len(ids) != count or len(set(ids)) != count:
        raise RuntimeError(f"upload failed ({len(set(ids))} distinct IDs): {result.stderr[-2000:]}")
    log(f"huimages put: {elapsed:.1f} s for {count} photos ({elapsed / count * 1000:.0f} ms each)")
    return copies, names, ids


def upload_cost(data: bytes, work: Path, count: int) -> dict[str, Any]:
    """What previews cost at upload, for the table: ``ImageStore.save_image`` per photo
    in-process (embedded backend, fsynced original) with previews, as every upload makes
    them, and with an engine that skips them (the upload path before previews),
    interleaved; plus the bytes stored per photo."""
    from huimages_wsgi import Config, ImageStore
    from huimages_wsgi.imaging.engine import ImageEngine, ImageInfo

    class WithoutPreviews(ImageEngine):
        def inspect(self, data: bytes, previews: bool = False, admit: Any = None) -> ImageInfo:
            return super().inspect(data, previews=False, admit=admit)

    stores = {
        "with": ImageStore(Config(data_dir=work / "upload-with"), engine=ImageEngine()),
        "without": ImageStore(Config(data_dir=work / "upload-without"), engine=WithoutPreviews()),
    }
    times: dict[str, list[float]] = {"with": [], "without": [], "decode": []}
    for i in range(count + 1):
        labels = ("with", "without", "decode") if i % 2 == 0 else ("decode", "without", "with")
        for label in labels:
            copy = with_comment(data, f"huimages upload cost {label} {i}")
            started = time.perf_counter()
            if label == "decode":  # the floor of any upload that validates the pixels
                with Image.open(io.BytesIO(copy)) as img:
                    img.load()
            else:
                stores[label].save_image(copy)
            if i:  # the first of each is a warm-up (imports, lazy tables)
                times[label].append(time.perf_counter() - started)
    stored: dict[str, int] = {}
    for path in (work / "upload-with" / "originals").rglob("*"):
        if path.is_file():
            kind = path.suffix.lstrip(".") or "original"
            stored[kind] = stored.get(kind, 0) + path.stat().st_size
    photos = count + 1
    return {
        "photos": count,
        "save_image_ms": {k: statistics.median(v) * 1000 for k, v in times.items()},
        "stored_bytes_per_photo": {k: v / photos for k, v in sorted(stored.items())},
    }


def clear_cache(data_dir: Path, size: str) -> None:
    shutil.rmtree(data_dir / "cache" / size, ignore_errors=True)


def cpu_split(pids: list[int], before: dict[int, float]) -> list[float]:
    used = [cpu_seconds(pid) - before.get(pid, 0.0) for pid in pids]
    total = sum(used) or 1.0
    return [round(u / total, 3) for u in used]


def bench(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    quick = args.quick
    n_cold = args.requests or (16 if quick else 120)
    rounds = 2
    per_round = n_cold // rounds
    n_cold = per_round * rounds
    concurrency = args.concurrency
    round_limit = 20.0 if quick else 120.0
    floor_count = 8 if quick else 40
    warm_seconds = 2.0 if quick else 4.0
    warm_runs = 2 if quick else 6

    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.photo:
        photo = Path(args.photo).resolve()
    else:
        photo = default_photo()
    with Image.open(photo) as img:
        photo_info = {
            "path": str(photo),
            "bytes": photo.stat().st_size,
            "width": img.width,
            "height": img.height,
            "format": img.format,
        }
    if photo_info["format"] != "JPEG":
        raise SystemExit("the photo must be a JPEG")
    log(
        f"photo {photo.name}: {photo_info['width']}x{photo_info['height']}, "
        f"{photo_info['bytes'] / 1e6:.1f} MB"
    )

    thumbor_bin, thumbor_version = ensure_thumbor()
    wrk = shutil.which("wrk") or ("/usr/bin/wrk" if Path("/usr/bin/wrk").exists() else None)
    if wrk is None:
        raise SystemExit("wrk is needed for the warm rows (apt-get install wrk)")

    work = Path(tempfile.mkdtemp(prefix="huimages-bench-"))
    try:
        data_dir = work / "data"
        log(f"uploading {n_cold} distinct copies into {data_dir}")
        copies, names, ids = upload_copies(photo, n_cold, work, data_dir)
        upload = upload_cost(photo.read_bytes(), work, 4 if quick else 12)
        log(
            "save_image: {with:.0f} ms with previews, {without:.0f} ms without".format(
                **upload["save_image_ms"]
            )
        )

        # servers -------------------------------------------------------------------
        hport, tport, bport = free_port(), free_port(), free_port()
        huimages = Server(
            "huimages",
            [
                str(venv_bin("huimages")),
                "--data-dir",
                str(data_dir),
                "serve",
                "--host",
                HOST,
                "--port",
                str(hport),
                "--workers",
                "2",
            ],
            hport,
            work / "huimages.log",
        )
        conf = work / "thumbor.conf"
        conf.write_text(THUMBOR_CONF.format(root=str(copies)))
        thumbor = Server(
            "thumbor",
            [
                str(thumbor_bin),
                "-i",
                HOST,
                "-p",
                str(tport),
                "-c",
                str(conf),
                "--processes",
                "2",
                "-l",
                "warning",
            ],
            tport,
            work / "thumbor.log",
        )
        huimages.wait_ready("/")
        thumbor.wait_ready("/healthcheck")
        time.sleep(1.0)  # let forked workers settle
        h_workers, t_workers = huimages.children(), thumbor.children()
        log(f"huimages :{hport} workers {h_workers}; thumbor :{tport} processes {t_workers}")
        if len(h_workers) != 2 or len(t_workers) != 2:
            raise RuntimeError("expected 2 workers each")

        rows: list[dict[str, Any]] = []
        raw: dict[str, Any] = {}
        data = photo.read_bytes()
        with Image.open(photo) as img:
            photo_size = "x".join(map(str, img.size))
        # cold rows + decode floor ---------------------------------------------------
        for size in SIZES:
            h_rounds, t_rounds, f_rounds = [], [], []
            h_split, t_split = [], []
            for r in range(rounds):
                chunk = slice(r * per_round, (r + 1) * per_round)
                h_paths = [f"/{size}/{i}.jpeg" for i in ids[chunk]]
                t_paths = [THUMBOR_PATHS[size].format(name=n) for n in names[chunk]]
                order = ("h", "t", "f") if r % 2 == 0 else ("f", "t", "h")
                for who in order:
                    if who == "h":
                        clear_cache(data_dir, size)
                        before = {p: cpu_seconds(p) for p in h_workers}
                        h_rounds.append(
                            run_load(hport, h_paths, concurrency, round_limit, args.keepalive)
                        )
                        h_split.append(cpu_split(h_workers, before))
                    elif who == "t":
                        before = {p: cpu_seconds(p) for p in t_workers}
                        t_rounds.append(
                            run_load(tport, t_paths, concurrency, round_limit, args.keepalive)
                        )
                        t_split.append(cpu_split(t_workers, before))
                    else:
                        f_rounds.append(run_floor(data, size, floor_count, FLOOR_PROCESSES))
            h, t, f = merge_rounds(h_rounds), merge_rounds(t_rounds), merge_rounds(f_rounds)
            f["decoded_size"] = f_rounds[0]["decoded_size"]
            f["single_process_rate"] = sum(x for fr in f_rounds for x in fr["single_rate"]) / (
                FLOOR_PROCESSES * len(f_rounds)
            )
            f["peak_rss_mb"] = max(fr["peak_rss_mb"] for fr in f_rounds)
            h["cpu_split"], t["cpu_split"] = h_split, t_split
            raw[f"cold {size}"] = {"huimages": h, "thumbor": t, "floor": f}
            log(
                f"cold {size}: huimages {h['rps']:.1f}/s thumbor {t['rps']:.1f}/s "
                f"floor {f['rps']:.1f}/s (decodes {f['decoded_size'][0]}x{f['decoded_size'][1]})"
            )
            # The most any server could reach against thumbor if rendering cost nothing
            # beyond the decode: the evidence when a cold target is out of reach.
            ceiling = f["rps"] / t["rps"] if t["rps"] else None
            rows.append(
                row(
                    f"cold {size}",
                    "huimages",
                    h,
                    "thumbor",
                    t,
                    COLD_TARGETS[size],
                    note=f"floor/thumbor {ceiling:.2f}x" if ceiling else "",
                )
            )
            rows.append(
                row(
                    f"cold {size} vs decode floor",
                    "huimages",
                    h,
                    f"floor {FLOOR_PROCESSES}proc",
                    f,
                    FLOOR_TARGET,
                    note=f"decodes {f['decoded_size'][0]}x{f['decoded_size'][1]}",
                )
            )

        # cold rows, sizes never asked before (issue 15) ------------------------------
        for grid, (_, _, _, t_pattern, target) in GRIDS.items():
            boxes = grid_boxes(grid, n_cold)
            if len(boxes) < n_cold:
                raise RuntimeError(f"grid {grid} has fewer than {n_cold} boxes")
            h_rounds, t_rounds, h_split, t_split = [], [], [], []
            for r in range(rounds):
                chunk = slice(r * per_round, (r + 1) * per_round)
                pairs = list(zip(boxes[chunk], ids[chunk], names[chunk], strict=True))
                h_paths = [f"/{grid_size(grid, box)}/{i}.jpeg" for box, i, _ in pairs]
                t_paths = [t_pattern.format(w=box[0], h=box[1], name=n) for box, _, n in pairs]
                for who in (("h", "t") if r % 2 == 0 else ("t", "h")):
                    if who == "h":
                        for box in boxes[chunk]:
                            clear_cache(data_dir, grid_size(grid, box))
                        before = {p: cpu_seconds(p) for p in h_workers}
                        h_rounds.append(
                            run_load(hport, h_paths, concurrency, round_limit, args.keepalive)
                        )
                        h_split.append(cpu_split(h_workers, before))
                    else:
                        before = {p: cpu_seconds(p) for p in t_workers}
                        t_rounds.append(
                            run_load(tport, t_paths, concurrency, round_limit, args.keepalive)
                        )
                        t_split.append(cpu_split(t_workers, before))
            h, t = merge_rounds(h_rounds), merge_rounds(t_rounds)
            h["cpu_split"], t["cpu_split"] = h_split, t_split
            raw[f"cold {grid}"] = {"huimages": h, "thumbor": t, "boxes": boxes}
            log(f"cold {grid}: huimages {h['rps']:.1f}/s thumbor {t['rps']:.1f}/s")
            rows.append(row(f"cold {grid}", "huimages", h, "thumbor", t, target,
                            note=f"{len(boxes)} distinct boxes and copies"))

        # memory ---------------------------------------------------------------------
        probe = run_load(
            hport, [f"/{RSS_PROBE_SIZE}/{i}.jpeg" for i in ids[:RSS_PROBE_COUNT]],
            concurrency, round_limit, args.keepalive,
        )
        raw["rss probe"] = probe
        log(f"rss probe: {RSS_PROBE_COUNT} renders of {RSS_PROBE_SIZE} from the original, "
            f"{probe['errors']} errors")
        h_rss = {pid: (vm_kb(pid, "VmHWM") or 0) / 1024 for pid in h_workers}
        t_rss = {pid: (vm_kb(pid, "VmHWM") or 0) / 1024 for pid in t_workers}
        worst = max(h_rss.values())
        rows.append(
            {
                "row": "worker peak RSS (VmHWM)",
                "a_name": "huimages",
                "a": {"value": worst, "unit": "MB", "per_worker": list(h_rss.values())},
                "b_name": "thumbor",
                "b": {
                    "value": max(t_rss.values()),
                    "unit": "MB",
                    "per_worker": list(t_rss.values()),
                },
                "ratio": None,
                "target": f"< {RSS_TARGET_MB:g} MB",
                "result": "PASS" if worst < RSS_TARGET_MB and not probe["errors"] else "FAIL",
                "note": f"incl. {RSS_PROBE_SIZE} renders, each a full {photo_size} decode",
            }
        )

        # what the cold rows cost at upload (information, no target) ---------------------
        stored = upload["stored_bytes_per_photo"]
        previews_kb = sum(v for k, v in stored.items() if k != "original") / 1024
        ms = upload["save_image_ms"]
        rows.append(
            {
                "row": "upload save_image vs decode",
                "a_name": "save_image",
                "a": {"value": ms["with"], "unit": "ms"},
                "b_name": "open+load",
                "b": {"value": ms["decode"], "unit": "ms"},
                "ratio": ms["with"] / ms["decode"],
                "target": f"<= {UPLOAD_TARGET:g}x",
                "result": "PASS" if ms["with"] / ms["decode"] <= UPLOAD_TARGET else "FAIL",
                "note": f"median per {photo_size} photo, in-process, embedded backend, "
                "vs Image.open().load() of the same bytes",
            }
        )
        rows.append(
            {
                "row": "upload save_image (info)",
                "a_name": "previews",
                "a": {"value": upload["save_image_ms"]["with"], "unit": "ms"},
                "b_name": "none",
                "b": {"value": upload["save_image_ms"]["without"], "unit": "ms"},
                "ratio": upload["save_image_ms"]["with"] / upload["save_image_ms"]["without"],
                "target": "-",
                "result": "INFO",
                "note": f"median per {photo_size} photo, in-process, embedded backend",
            }
        )
        rows.append(
            {
                "row": "stored per photo (info)",
                "a_name": "previews",
                "a": {"value": previews_kb, "unit": "KB"},
                "b_name": "original",
                "b": {"value": stored.get("original", 0) / 1024, "unit": "KB"},
                "ratio": previews_kb * 1024 / (stored.get("original") or 1),
                "target": "-",
                "result": "INFO",
                "note": ", ".join(
                    f"{k} {v / 1024:.0f} KB" for k, v in stored.items() if k != "original"
                ),
            }
        )

        # warm rows ------------------------------------------------------------------
        warm_id = ids[0]
        conn = http.client.HTTPConnection(HOST, hport, timeout=60)
        conn.request("GET", f"/{WARM_SIZE}/{warm_id}.jpeg")
        conn.getresponse().read()
        conn.close()
        cached = data_dir / "cache" / WARM_SIZE / f"{warm_id}.jpeg"
        if not cached.exists():
            raise RuntimeError(f"expected the cached variant at {cached}")
        bare_module = RESULTS / "bare_app.py"
        bare_module.write_text(BARE_APP)
        bare = Server(
            "bare",
            [
                str(venv_bin("gunicorn")),
                "-w",
                "2",
                "-b",
                f"{HOST}:{bport}",
                "--no-control-socket",
                "--chdir",
                str(RESULTS),
                "bare_app:app",
            ],
            bport,
            work / "bare.log",
            env={**os.environ, "BENCH_BARE_FILE": str(cached)},
        )
        bare.wait_ready("/")
        script = work / "check.lua"
        script.write_text(WRK_LUA)
        m_runs, b_runs = [], []
        m_url = f"http://{HOST}:{hport}/{WARM_SIZE}/{warm_id}.jpeg"
        b_url = f"http://{HOST}:{bport}/{WARM_SIZE}/{warm_id}.jpeg"
        for r in range(warm_runs):
            order = ("m", "b") if r % 2 == 0 else ("b", "m")
            for who in order:
                if who == "m":
                    m_runs.append(run_wrk(wrk, script, m_url, warm_seconds, 4))
                else:
                    b_runs.append(run_wrk(wrk, script, b_url, warm_seconds, 4))
        bare.stop()
        m, b = merge_wrk(m_runs), merge_wrk(b_runs)
        raw["warm hit"] = {"middleware": m, "bare": b, "file_bytes": cached.stat().st_size}
        log(f"warm hit: middleware {m['rps']:.0f}/s bare {b['rps']:.0f}/s")
        rows.append(row(f"warm hit {WARM_SIZE}", "middleware", m, "bare app", b, WARM_TARGET))
    finally:
        Server.stop_all()
        shutil.rmtree(work, ignore_errors=True)

    return {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "mode": "quick" if quick else "full",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            # other work on the machine skews the numbers: the 1-minute load shows it
            "loadavg_1m_before_after": [load_before[0], os.getloadavg()[0]],
        },
        "versions": {
            "python": platform.python_version(),
            "pillow_huimages": Image.__version__,
            "thumbor": thumbor_version,
            "wrk": subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.split("\n")[
                0
            ],
        },
        "photo": photo_info,
        "settings": {
            "cold_requests_per_system_and_size": n_cold,
            "rounds": rounds,
            "concurrency": concurrency,
            "keepalive": args.keepalive,
            "floor_processes": FLOOR_PROCESSES,
            "floor_images_per_process_per_round": floor_count,
            "warm": {"tool": "wrk -t2 -c4", "seconds_per_run": warm_seconds, "runs": warm_runs},
            "thumbor_conf": THUMBOR_CONF.format(root="<copies dir>"),
        },
        "rows": rows,
        "upload": upload,
        "raw": strip_latencies(raw),
    }


BARE_APP = '''\
"""Written by bench/run.py: the cheapest possible WSGI answer with the same file."""
import os

PATH = os.environ["BENCH_BARE_FILE"]


def app(environ, start_response):
    handle = open(PATH, "rb")
    length = os.fstat(handle.fileno()).st_size
    start_response("200 OK", [("Content-Type", "image/jpeg"), ("Content-Length", str(length))])
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper:
        return wrapper(handle, 1 << 16)
    return iter(lambda: handle.read(1 << 16), b"")
'''


def row(
    name: str, a_name: str, a: dict, b_name: str, b: dict, target: float, note: str = ""
) -> dict:
    ratio = a["rps"] / b["rps"] if b["rps"] else None
    errors = a["errors"] + b["errors"]
    ok = ratio is not None and ratio >= target and errors == 0
    result = "PASS" if ok else ("FAIL (errors)" if errors else "FAIL")
    return {
        "row": name,
        "a_name": a_name,
        "a": {k: a[k] for k in ("rps", "p50_ms", "p99_ms", "ok", "errors")},
        "b_name": b_name,
        "b": {k: b[k] for k in ("rps", "p50_ms", "p99_ms", "ok", "errors")},
        "ratio": ratio,
        "target": f">= {target:g}x",
        "result": result,
        "note": note,
    }


def strip_latencies(raw: dict) -> dict:
    return json.loads(json.dumps(raw, default=str))


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render_table(report: dict, footer: bool = True) -> str:
    head = (
        f"{'row':<30} {'A':<10} {'req/s':>7} {'p50ms':>7} {'p99ms':>7} | "
        f"{'B':<12} {'req/s':>7} {'p50ms':>7} {'p99ms':>7} | {'A/B':>6} {'target':>9} "
        f"{'err':>4}  result"
    )
    lines = [head, "-" * len(head)]
    for r in report["rows"]:
        a, b = r["a"], r["b"]
        if "unit" in a:
            left = f"{r['a_name']:<10} {fmt(a['value'], '.0f'):>7} {a['unit']:>7} {'':>7}"
            right = f"{r['b_name']:<12} {fmt(b['value'], '.0f'):>7} {b['unit']:>7} {'':>7}"
            errors = ""
        else:
            left = (
                f"{r['a_name']:<10} {fmt(a['rps'], '.1f'):>7} {fmt(a['p50_ms'], '.1f'):>7} "
                f"{fmt(a['p99_ms'], '.1f'):>7}"
            )
            right = (
                f"{r['b_name']:<12} {fmt(b['rps'], '.1f'):>7} {fmt(b['p50_ms'], '.1f'):>7} "
                f"{fmt(b['p99_ms'], '.1f'):>7}"
            )
            errors = str(a["errors"] + b["errors"])
        ratio = fmt(r["ratio"], ".2f") + ("x" if r["ratio"] is not None else "")
        tail = f"{ratio:>6} {r['target']:>9} {errors:>4}  {r['result']}"
        line = f"{r['row']:<30} {left} | {right} | {tail}"
        if r.get("note"):
            line += f"  ({r['note']})"
        lines.append(line)
    if not footer:
        return "\n".join(lines)
    s = report["settings"]
    lines.append("")
    lines.append(
        f"{report['mode']} mode; photo {report['photo']['width']}x{report['photo']['height']} "
        f"{report['photo']['bytes'] / 1e6:.1f} MB; cold: {s['cold_requests_per_system_and_size']} "
        f"requests/system/size, concurrency {s['concurrency']}, {s['rounds']} interleaved rounds; "
        f"floor: {s['floor_processes']} processes; warm: {s['warm']['tool']} "
        f"{s['warm']['runs']}x{s['warm']['seconds_per_run']:g}s per side; "
        f"{report['versions']['thumbor']}; "
        f"{report['machine']['cpus']} CPUs, 1-min load before/after "
        + "/".join(f"{x:.1f}" for x in report["machine"]["loadavg_1m_before_after"])
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photo", help="a JPEG to use instead of the generated 12 MP photo")
    parser.add_argument("--quick", action="store_true", help="smoke test: few requests, < 1 min")
    parser.add_argument("--ladder", action="store_true",
                        help="every row on every original of bench/ladder.py (make bench)")
    parser.add_argument("--only", nargs="*", default=[],
                        help="with --ladder: only the originals whose name has one of these")
    parser.add_argument("--requests", type=int, help="cold requests per system and size")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads (cold rows)")
    parser.add_argument(
        "--keepalive",
        action="store_true",
        help="reuse connections on cold rows (default: Connection: close, "
        "so thumbor's 2 processes share the load; see README)",
    )
    args = parser.parse_args(argv)

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if inherited as ignored
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    started = time.monotonic()
    try:
        if args.ladder:
            import ladder_bench

            report = ladder_bench.bench_ladder(args)
        else:
            report = bench(args)
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        return 130
    finally:
        Server.stop_all()
    report["duration_s"] = round(time.monotonic() - started, 1)
    out = RESULTS / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    if args.ladder:
        import ladder_bench

        print(ladder_bench.render(report))
    else:
        print(render_table(report))
    print(f"\nwritten to {out.relative_to(ROOT)} in {report['duration_s']:.0f}s")
    # a missed target is a finding, not a crash; failed requests are
    return 1 if any("errors" in r["result"] for r in report["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
