"""Decoding is bounded on every path (issue 22, point 4): scans, memory, admission.

The hostile files are made here (tests/imagefactory.py), none is stored:
a progressive JPEG repeating its last scan 1000 times, tiny WebPs and GIFs
declaring huge canvases, a GIF of many frames. Each is refused from its
header, before Pillow decodes a pixel, at upload and when it is already
stored; uploads decode under the same render admission as misses.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import ImageFile
from webob import Request

from huimages_wsgi import Config, ImageMiddleware, ImageStore, make_app
from huimages_wsgi.core.errors import ImageTooLarge
from huimages_wsgi.core.ids import compute_id
from huimages_wsgi.imaging import upload as upload_module
from huimages_wsgi.imaging.engine import ImageEngine
from huimages_wsgi.imaging.jpegscan import jpeg_cost
from huimages_wsgi.storage import timestamp

from .. import imagefactory as f
from ..conftest import BIN, free_port
from ..processes import process_tree
from .test_api import TOKEN, call
from .test_browse import post_upload

MB = 1 << 20

#: name -> a hostile file, small on disk, that the header says is costly to decode.
HOSTILE = {
    "1000-scan progressive JPEG": lambda: f.many_scans_jpeg(64, 48, 1000),
    "WebP VP8L 16383x16383": lambda: f.webp_vp8l_header(16383, 16383),
    "WebP VP8L 9000x9000": lambda: f.webp_vp8l_header(9000, 9000),
    "animated WebP 9000x9000 canvas": lambda: f.huge_canvas_webp(9000, 9000),
    "GIF 65535x65535 screen": lambda: f.huge_canvas_gif(65535, 65535),
    "GIF 9000x9000 screen": lambda: f.huge_canvas_gif(9000, 9000),
    "GIF of 20000 frames": lambda: f.huge_canvas_gif(9000, 9000, frames=20_000),
    "HEIC declaring 9000x9000": lambda: f.huge_canvas_heic(9000, 9000),
}


@pytest.fixture
def no_decoding(monkeypatch):
    """Fails the test if Pillow decodes a pixel (every format loads through this)."""
    decoded: list[str] = []
    real = ImageFile.ImageFile.load

    def load(self):
        decoded.append(str(self.format))
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return decoded


def plant(store: ImageStore, data: bytes, width: int, height: int) -> str:
    """An original stored straight into the blob store and the catalog, as an older
    server that lacked the limits would have kept it."""
    imageid = compute_id(data)
    store.blobs.put(imageid, data, "image/jpeg", width, height)
    now = timestamp()
    store.catalog.update(imageid, lambda doc: doc.update(
        width=width, height=height, length=len(data), contenttype="image/jpeg",
        deleted=False, ctime=now, mtime=now, title=[], seo_name="old"))
    return imageid


# -- scans ---------------------------------------------------------------------------


def test_the_hostile_files_decode_when_nothing_stops_them(no_decoding):
    """The files are what they claim (a progressive JPEG of over 1000 scans, a GIF
    drawn on a 9000x9000 screen), and ``no_decoding`` sees a decode when there is one."""
    data = f.many_scans_jpeg(64, 48, 1000)
    assert len(data) < 100_000
    cost = jpeg_cost(data, 5000)
    assert cost.progressive and cost.scans > 1000
    lifted = ImageEngine(max_scans=5000, max_decode_bytes=1 << 40)
    lifted.inspect(data, previews=True)  # decodes, all of it
    assert lifted.inspect(f.huge_canvas_gif(9000, 9000)).width == 9000
    assert no_decoding == ["JPEG", "GIF"]


def test_a_jpeg_of_too_many_scans_is_refused_at_upload_before_decoding(store, no_decoding):
    with pytest.raises(ImageTooLarge, match="scans") as refused:
        store.save(f.many_scans_jpeg(64, 48, 1000))
    assert refused.value.status == 413 and "HUIMAGES_MAX_SCANS" in str(refused.value)
    assert no_decoding == []
    assert store.recent_ids(5) == []


def test_the_scan_limit_is_a_setting_and_ordinary_progressive_jpegs_pass(tmp_path):
    data = f.many_scans_jpeg(64, 48, 20)  # 10 of the encoder's and 20 more
    assert jpeg_cost(data, 100).scans == 30
    strict = ImageStore(Config(data_dir=tmp_path / "a", max_scans=29))
    with pytest.raises(ImageTooLarge, match="more than 29 scans"):
        strict.save(data)
    assert ImageStore(Config(data_dir=tmp_path / "b")).save(data).new
    assert Config.from_env({"HUIMAGES_MAX_SCANS": "7"}).max_scans == 7


def test_the_api_refuses_the_1000_scan_jpeg_with_413_naming_scans(config, no_decoding):
    app = make_app(config.with_changes(upload_token=TOKEN))
    response = call(app, "/_api/images", "POST", f.many_scans_jpeg(64, 48, 1000),
                    {"Content-Type": "image/jpeg"})
    assert response.status_int == 413 and "scans" in response.json["error"], response.text
    assert no_decoding == []


def test_a_stored_original_of_too_many_scans_is_a_422_and_stays_unmarked(store, no_decoding):
    data = f.many_scans_jpeg(64, 48, 1000)
    imageid = plant(store, data, 64, 48)
    app = ImageMiddleware(prefix="", store=store)
    for path in (f"/40x30/{imageid}.jpeg", f"/o/{imageid}.jpeg", f"/20x20!/{imageid}.webp"):
        response = Request.blank(path).get_response(app)
        assert response.status_int == 422, (path, response.status, response.text)
        assert "over a limit of this server" in response.text and "scans" in response.text
    assert no_decoding == []
    doc = store.get_imagedoc(imageid)
    assert "broken" not in doc and not doc.get("deleted")
    raised = ImageMiddleware(prefix="", store=ImageStore(store.config.with_changes(
        max_scans=2000)))
    assert Request.blank(f"/40x30/{imageid}.jpeg").get_response(raised).status_int == 200


def test_scans_are_counted_where_the_strict_walk_gives_up():
    """Bytes between segments make the structural walk fail; libjpeg skips them and
    decodes every scan all the same, so the count goes on past them."""
    data = f.many_scans_jpeg(64, 48, 300)
    sos = data.index(b"\xff\xda")
    odd = data[:sos] + b"\x00\x00junk" + data[sos:]
    assert jpeg_cost(odd, 100).scans == 101  # counted no further than the limit and one
    with pytest.raises(ImageTooLarge, match="scans"):
        ImageEngine().inspect(odd, previews=True)


# -- memory --------------------------------------------------------------------------


@pytest.mark.parametrize("name", [name for name in HOSTILE if "JPEG" not in name])
def test_tiny_files_with_huge_canvases_are_refused_before_decoding(store, no_decoding, name):
    data = HOSTILE[name]()
    with pytest.raises(ImageTooLarge, match="pixels|memory") as refused:
        store.save(data)
    assert refused.value.status == 413
    assert no_decoding == [], name
    assert store.recent_ids(5) == []


def test_the_memory_limit_names_its_setting_and_can_be_raised(tmp_path):
    data = f.huge_canvas_gif(3000, 3000)  # 9 MP: 81 MB by the estimate
    low = ImageStore(Config(data_dir=tmp_path / "a", max_decode_bytes=64 * MB))
    with pytest.raises(ImageTooLarge, match="HUIMAGES_MAX_DECODE_BYTES"):
        low.save(data)
    assert ImageStore(Config(data_dir=tmp_path / "b")).save(data).new
    assert Config.from_env({"HUIMAGES_MAX_DECODE_BYTES": "64M"}).max_decode_bytes == 64 * MB


def test_a_stored_original_over_the_memory_limit_is_a_422_and_stays_unmarked(store):
    data = f.huge_canvas_webp(9000, 9000)
    imageid = plant(store, data, 9000, 9000)
    app = ImageMiddleware(prefix="", store=store)
    response = Request.blank(f"/300x300/{imageid}.jpeg").get_response(app)
    assert response.status_int == 422 and "memory" in response.text, response.text
    assert "broken" not in store.get_imagedoc(imageid)


def test_frames_cost_nothing_only_the_first_is_decoded(store):
    """An ordinary animation of many frames is accepted: the first frame is all that is
    ever decoded, so only the canvas counts."""
    imageid = store.save(f.huge_canvas_gif(200, 150, frames=5000)).imageid
    assert store.scaled_imagedata(imageid, "100x100")[:2] == b"\xff\xd8"


@pytest.mark.slow  # starts a server process
def test_a_server_refusing_each_hostile_file_stays_below_400_mb(tmp_path):
    """Through ``huimages serve``: every hostile upload is a 413, and the peak resident
    memory of the server's processes (VmHWM) stays below 400 MB after each."""
    with served(tmp_path) as (base, pid):
        assert post(base, f.photo_jpeg(800, 600))[0] == 201  # the server works
        for name, make in HOSTILE.items():
            status, text = post(base, make())
            assert status == 413, (name, status, text)
            peak = max(high_water_marks(pid).values())
            assert peak < 400 * MB, (name, peak // MB)


PEAK_PROBE = """
import io, sys
from huimages_wsgi.core.sizes import parse_size
from huimages_wsgi.imaging.bounds import check_bounds, open_bounded
from huimages_wsgi.imaging.engine import ImageEngine
from huimages_wsgi.imaging.memory import return_large_buffers

return_large_buffers()  # as make_app does
data = open(sys.argv[1], "rb").read()
engine = ImageEngine(max_decode_bytes=1 << 40)
estimate = check_bounds(open_bounded(io.BytesIO(data), engine), io.BytesIO(data), engine)

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

before = status("VmRSS")
if sys.argv[2] == "upload":
    engine.inspect(data, previews=True)
else:
    engine.render(io.BytesIO(data), parse_size(sys.argv[2]), io.BytesIO())
print(status("VmHWM") - before, estimate)
"""


def _peak_cases() -> dict[str, bytes]:
    photo = f.photo(3000, 3000, seed=2)
    alpha = photo.convert("RGBA")
    alpha.putalpha(photo.convert("L"))
    return {
        "JPEG": f.encode(photo, quality=90),
        "progressive JPEG": f.encode(photo, quality=90, progressive=True),
        "CMYK JPEG": f.encode(photo.convert("CMYK"), quality=90),
        "RGBA PNG": f.encode(alpha, "PNG", compress_level=1),
        "16-bit PNG": f.encode(photo.convert("L").convert("I;16"), "PNG", compress_level=1),
        "GIF": f.encode(photo.convert("P"), "GIF"),
        "WebP": f.encode(photo, "WEBP", quality=80, method=0),
        "WebP with alpha": f.encode(alpha, "WEBP", quality=80, method=0),
        "HEIC": f.encode(photo, "HEIF", quality=60),
        "10-bit HEIC": f.deep_heic(3000, 3000),
        "AVIF": f.encode(photo, "AVIF", quality=60, speed=10),
        "GIF 9000x9000 screen": f.huge_canvas_gif(9000, 9000),
    }


@pytest.mark.slow  # 36 decodes of 9 MP and more in subprocesses, two at a time: about 27 s
def test_the_estimate_covers_the_real_peak(tmp_path):
    """The memory limit bounds what a decode really takes: for every format, the peak
    resident memory of an upload and of renders from the original stays within the
    estimate the limit is checked against. Each decode runs in a process of its own,
    whose own peak (VmHWM) is measured, so two run at once."""
    cases = []
    for index, (name, data) in enumerate(_peak_cases().items()):
        path = tmp_path / f"original-{index}"
        path.write_bytes(data)
        cases += [(name, path, job) for job in ("upload", "3000x3000", "300x300")]

    def probe(case: tuple[str, Path, str]) -> tuple[str, str, int, int]:
        name, path, job = case
        out = subprocess.run([str(BIN / "python"), "-c", PEAK_PROBE, str(path), job],
                             capture_output=True, text=True, check=True, timeout=120)
        peak, estimate = map(int, out.stdout.split())
        return name, job, peak, estimate

    with ThreadPoolExecutor(2) as pool:
        measured = list(pool.map(probe, cases))
    assert len(measured) == 36
    over = [(name, job, peak // MB, estimate // MB)
            for name, job, peak, estimate in measured if peak > estimate]
    assert over == []


# -- admission -------------------------------------------------------------------------


def test_parallel_uploads_never_decode_more_at_once_than_the_admission_allows(
        tmp_path, monkeypatch):
    config = Config(data_dir=tmp_path / "data", render_slots=2, render_slots_per_process=1,
                    render_wait=30, render_queue=20, upload_token=TOKEN)
    store = ImageStore(config)
    app = make_app(store=store)
    images = ImageMiddleware(prefix="", store=store)
    assert images.admission is store.admission  # one admission: misses and uploads
    running, most = [0], {"running": 0, "decoding": 0}
    decoding, lock = [0], threading.Lock()
    real = upload_module.make_previews

    def observe(kind, value):
        if kind == "running":
            with lock:
                running[0] += int(value)
                most["running"] = max(most["running"], running[0])

    def slow_previews(*args, **kwargs):
        with lock:
            decoding[0] += 1
            most["decoding"] = max(most["decoding"], decoding[0])
        time.sleep(0.15)  # long enough for the others to try
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                decoding[0] -= 1

    store.admission.observer = observe
    monkeypatch.setattr(upload_module, "make_previews", slow_previews)
    bodies = [f.encode(f.photo(2400, 1800, seed=n), "PNG", compress_level=1)
              for n in range(5)]  # 4.3 MP decoded whole: large decodes
    statuses: list[int] = []

    def send(body):
        answer = call(app, "/_api/images", "POST", body, {"Content-Type": "image/png"})
        statuses.append(answer.status_int)

    threads = [threading.Thread(target=send, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert statuses == [201] * 5
    assert most == {"running": 1, "decoding": 1}, most  # one decode slot: one at a time


def test_an_upload_refused_by_the_admission_is_503_with_retry_after(tmp_path):
    """Every render slot is taken (here by a miss that holds it) and nobody may wait:
    an upload through the API and through the browse form is refused like a miss."""
    config = Config(data_dir=tmp_path / "data", render_slots=1, render_queue=0,
                    upload_token=TOKEN, browse=True)
    store = ImageStore(config)
    app = make_app(store=store)
    admission = store.admission
    release, holding = threading.Event(), threading.Event()

    def miss():
        with admission.render(large=True):
            holding.set()
            release.wait(20)

    holder = threading.Thread(target=miss)
    holder.start()
    try:
        assert holding.wait(10)
        api = call(app, "/_api/images", "POST", f.solid_jpeg(), {"Content-Type": "image/jpeg"})
        form = post_upload(app, f.solid_jpeg(colour=(1, 2, 3)),
                           headers={"Authorization": f"Bearer {TOKEN}"})
    finally:
        release.set()
        holder.join(20)
    assert api.status_int == 503 and api.headers["Retry-After"], api.text
    assert "busy" in api.json["error"]
    assert form.status_int == 503 and form.headers["Retry-After"], form.text
    assert store.recent_ids(5) == []
    answer = call(app, "/_api/images", "POST", f.solid_jpeg(), {"Content-Type": "image/jpeg"})
    assert answer.status_int == 201  # the slot is free again


# -- a real server ---------------------------------------------------------------------


class served:
    """``huimages serve`` (one worker) on a free loopback port: (base URL, main pid)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    def __enter__(self) -> tuple[str, int]:
        port = free_port()
        env = {**os.environ, "HUIMAGES_DATA_DIR": str(self.tmp_path / "data"),
               "HUIMAGES_UPLOAD_TOKEN": TOKEN, "HUIMAGES_FOLLOW": "0"}
        self.log = open(self.tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed in __exit__
        self.process = subprocess.Popen(
            [str(BIN / "huimages"), "serve", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--threads", "4"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_health", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError):
                assert self.process.poll() is None, self.logged()
                assert time.monotonic() < deadline, self.logged()
                time.sleep(0.2)
        return base, self.process.pid

    def logged(self) -> str:
        return (self.tmp_path / "serve.log").read_text(errors="replace")[-2000:]

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()


def post(base: str, data: bytes, timeout: float = 120.0) -> tuple[int, str]:
    request = urllib.request.Request(
        f"{base}/_api/images", data=data, method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def high_water_marks(root: int) -> dict[int, int]:
    """Peak resident bytes (VmHWM) of ``root`` and every process below it."""
    tree = process_tree(root)
    marks = {}
    for pid in tree:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                marks[pid] = int(line.split()[1]) * 1024
    return marks
