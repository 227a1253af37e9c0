#!/usr/bin/env python3
"""Where the time goes on huimages' cold and warm paths, and what the knobs do.

Usage (repository root)::

    .venv/bin/python bench/profile_paths.py [--photo PATH] [--quick]

1. cold phases, in-process, per size: open, geometry, draft decode,
   resize, transpose, colour conversion, JPEG encode, file write, plus the
   whole ``ImageStore.variant`` (catalog lookup, lock, temp file, rename);
   and the top functions under cProfile;
2. engine variants (``ImageEngine(draft_gap=..., reducing_gap=...,
   resample=...)``), including the settings before issue #6: ms per render
   (interleaved rounds, median), output bytes and PSNR against a reference
   (full decode, exact LANCZOS, no JPEG round trip);
3. warm path, in-process: the bare file_wrapper app vs the middleware's hit
   path, microseconds per call, and the middleware under cProfile.

End to end numbers come from bench/run.py. Writes
bench/results/profile-<timestamp>.json and prints a summary.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops, ImageStat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench.run as run  # noqa: E402
from huimages_wsgi.core.config import Config  # noqa: E402
from huimages_wsgi.core.geometry import scaled_geometry  # noqa: E402
from huimages_wsgi.core.sizes import parse_size  # noqa: E402
from huimages_wsgi.imaging.engine import ImageEngine  # noqa: E402
from huimages_wsgi.store.imagestore import ImageStore  # noqa: E402
from huimages_wsgi.web.app import make_app  # noqa: E402

SIZES = run.SIZES


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1000


# -- 1. cold phases ------------------------------------------------------------------


def phases(engine: Any, data: bytes, size_text: str, tmpdir: Path) -> dict[str, float]:
    """engine.render, step by step, through its ``phase`` hook (timings in seconds)."""
    size = parse_size(size_text)
    c = time.perf_counter
    marks: list[tuple[str, float]] = []
    t0 = c()
    out = io.BytesIO()
    engine.render(io.BytesIO(data), size, out, phase=lambda name, img: marks.append((name, c())))
    fd, tmp = tempfile.mkstemp(dir=tmpdir, suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(out.getvalue())
    os.chmod(tmp, 0o644)
    os.replace(tmp, tmpdir / "out.jpeg")
    marks.append(("file write", c()))
    timings, before = {}, t0
    for name, when in marks:
        timings[name] = when - before
        before = when
    timings["total"] = before - t0
    return timings


def cold_phases(data: bytes, iterations: dict[str, int], tmpdir: Path) -> dict[str, Any]:
    engine = ImageEngine()
    result = {}
    for size in SIZES:
        phases(engine, data, size, tmpdir)  # warm-up
        runs = [phases(engine, data, size, tmpdir) for _ in range(iterations[size])]
        result[size] = {k: median_ms([r[k] for r in runs]) for k in runs[0]}
        render = []
        for _ in range(iterations[size]):
            start = time.perf_counter()
            engine.render(io.BytesIO(data), parse_size(size), io.BytesIO())
            render.append(time.perf_counter() - start)
        result[size]["engine.render (whole)"] = median_ms(render)
    return result


def store_variant(photo: bytes, count: int, tmpdir: Path) -> dict[str, Any]:
    """The whole miss path below WSGI: catalog, blob open, lock, render, write, rename."""
    config = Config(data_dir=tmpdir / "data")
    store = ImageStore(config)
    ids = [store.save_image(run.with_comment(photo, f"p{i}")) for i in range(count)]
    out = {}
    for size_text in SIZES:
        size = store.size_for(size_text)
        times = []
        for imageid in ids:
            start = time.perf_counter()
            store.variant_path(imageid, size)
            times.append(time.perf_counter() - start)
        out[size_text] = median_ms(times[1:])
    return out


def cprofile_top(data: bytes, count: int, top: int = 7) -> dict[str, list[str]]:
    engine = ImageEngine()
    result = {}
    for size_text in SIZES:
        size = parse_size(size_text)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(count):
            engine.render(io.BytesIO(data), size, io.BytesIO())
        prof.disable()
        stream = io.StringIO()
        stats = pstats.Stats(prof, stream=stream)
        rows = []
        for func, (cc, nc, tt, ct, callers) in sorted(
            stats.stats.items(), key=lambda item: item[1][2], reverse=True
        )[:top]:
            del cc, callers, ct
            name = f"{Path(func[0]).name}:{func[1]}({func[2]})"
            rows.append(f"{tt / count * 1000:7.2f} ms/render  {nc // count:>4} calls  {name}")
        result[size_text] = rows
    return result


# -- 2. engine experiments -----------------------------------------------------------


def psnr(a: Image.Image, b: Image.Image) -> float:
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    mse = sum(ImageStat.Stat(diff).sum2) / (3 * a.width * a.height)
    return 99.0 if mse == 0 else 10 * math.log10(255 * 255 / mse)


def reference(data: bytes, size_text: str) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    geometry = scaled_geometry(img.width, img.height, parse_size(size_text))
    return img.resize(
        (geometry.width, geometry.height),
        Image.Resampling.LANCZOS,
        box=geometry.box,
        reducing_gap=None,
    )


VARIANTS: dict[str, dict[str, Any]] = {
    "default (draft_gap 1, BICUBIC, reducing_gap 2)": {},
    "before #6 (draft_gap 2, LANCZOS)": {
        "draft_gap": 2.0,
        "resample": Image.Resampling.LANCZOS,
    },
    "LANCZOS": {"resample": Image.Resampling.LANCZOS},
    "reducing_gap None (exact)": {"reducing_gap": None},
    "reducing_gap 1.0": {"reducing_gap": 1.0},
    "BILINEAR": {"resample": Image.Resampling.BILINEAR},
}


def engine_experiments(data: bytes, rounds: int, per_round: dict[str, int]) -> dict[str, Any]:
    engines = {name: ImageEngine(**kw) for name, kw in VARIANTS.items()}
    result: dict[str, Any] = {}
    for size_text in SIZES:
        size = parse_size(size_text)
        ref = reference(data, size_text)
        times: dict[str, list[float]] = {name: [] for name in engines}
        outputs: dict[str, bytes] = {}
        for _ in range(rounds):
            for name, engine in engines.items():  # interleaved: drift hits all alike
                for _ in range(per_round[size_text]):
                    out = io.BytesIO()
                    start = time.perf_counter()
                    engine.render(io.BytesIO(data), size, out)
                    times[name].append(time.perf_counter() - start)
                    outputs[name] = out.getvalue()
        base = median_ms(times[next(iter(engines))])
        result[size_text] = {}
        for name in engines:
            ms = median_ms(times[name])
            result[size_text][name] = {
                "ms": ms,
                "speedup": base / ms,
                "bytes": len(outputs[name]),
                "psnr_db": psnr(Image.open(io.BytesIO(outputs[name])), ref),
            }
    return result


# -- 3. warm path in-process ---------------------------------------------------------


class _Wrapper:
    """Like gunicorn's FileWrapper: iterable, closable."""

    def __init__(self, handle: Any, block: int) -> None:
        self.handle, self.block = handle, block

    def __iter__(self):  # noqa: ANN204
        return iter(lambda: self.handle.read(self.block), b"")

    def close(self) -> None:
        self.handle.close()


def warm_inprocess(data_dir: Path, imageid: str, cached: Path, count: int) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    os.environ["BENCH_BARE_FILE"] = str(cached)
    exec(run.BARE_APP, namespace)  # noqa: S102 - our own module text
    apps = {"bare": namespace["app"], "middleware": make_app(Config(data_dir=data_dir))}
    path = f"/{run.WARM_SIZE}/{imageid}.jpeg"

    def environ() -> dict[str, Any]:
        return {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": "http",
            "HTTP_HOST": "127.0.0.1",
            "wsgi.file_wrapper": _Wrapper,
        }

    def start_response(status: str, headers: list, exc_info: Any = None) -> None:
        del status, headers, exc_info

    timings: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(5):
        for name, app in apps.items():
            start = time.perf_counter()
            for _ in range(count):
                app(environ(), start_response).close()
            timings[name].append((time.perf_counter() - start) / count)
    result = {name: min(t) * 1e6 for name, t in timings.items()}  # best of 5, microseconds
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(count):
        apps["middleware"](environ(), start_response).close()
    prof.disable()
    stats = pstats.Stats(prof)
    top = []
    for func, (cc, nc, tt, ct, callers) in sorted(
        stats.stats.items(), key=lambda item: item[1][3], reverse=True
    )[:25]:
        del cc, tt, callers
        top.append(
            f"{ct / count * 1e6:7.1f} us cum  {nc // count:>3} calls  "
            f"{Path(func[0]).name}:{func[1]}({func[2]})"
        )
    return {"us_per_call": result, "cprofile_middleware_cumulative": top}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photo")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    photo = Path(args.photo) if args.photo else run.RESULTS / "photo-4000x3000.jpg"
    if not photo.exists():
        run.make_photo(photo)
    data = photo.read_bytes()
    q = args.quick
    its = {"240x160": 5 if q else 30, "75x75!": 5 if q else 30, "1024x768": 3 if q else 12}
    report: dict[str, Any] = {"photo": str(photo), "pillow": Image.__version__}
    work = Path(tempfile.mkdtemp(prefix="huimages-profile-"))
    try:
        run.log("cold phases")
        report["cold_phases_ms"] = cold_phases(data, its, work)
        report["store_variant_ms"] = store_variant(data, 4 if q else 12, work)
        report["cprofile_render"] = cprofile_top(data, 3 if q else 10)
        run.log("engine variants")
        per_round = {"240x160": 2 if q else 6, "75x75!": 2 if q else 6, "1024x768": 1 if q else 3}
        report["engine_experiments"] = engine_experiments(data, 2 if q else 4, per_round)
        run.log("warm path in-process")
        store = ImageStore(Config(data_dir=work / "data"))
        imageid = store.save_image(data)
        cached = store.variant_path(imageid, store.size_for(run.WARM_SIZE))
        report["warm_inprocess"] = warm_inprocess(
            work / "data", imageid, cached, 500 if q else 5000
        )
    finally:
        run.Server.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    out = run.RESULTS / f"profile-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_summary(report)
    print(f"\nwritten to {out.relative_to(ROOT)}")
    return 0


def print_summary(report: dict[str, Any]) -> None:
    print("== cold path phases, ms (median, in-process, 1 core) ==")
    names = list(next(iter(report["cold_phases_ms"].values())))
    print(f"{'phase':<22}" + "".join(f"{s:>11}" for s in SIZES))
    for name in names:
        print(f"{name:<22}" + "".join(f"{report['cold_phases_ms'][s][name]:>11.2f}" for s in SIZES))
    print(
        f"{'store.variant (miss)':<22}"
        + "".join(f"{report['store_variant_ms'][s]:>11.2f}" for s in SIZES)
    )
    for size, rows in report["cprofile_render"].items():
        print(f"-- cProfile engine.render {size} (tottime)")
        for line in rows:
            print("   " + line)
    print("\n== engine variants (ImageEngine keyword arguments) ==")
    for size, variants in report["engine_experiments"].items():
        print(f"-- {size}")
        for name, v in variants.items():
            print(
                f"   {name:<48} {v['ms']:8.1f} ms  x{v['speedup']:.2f}  "
                f"{v['bytes']:>7} B  PSNR {v['psnr_db']:.2f} dB"
            )
    w = report["warm_inprocess"]
    print("\n== warm hit in-process, us per call (best of 5) ==")
    for name, us in w["us_per_call"].items():
        print(f"   {name:<12} {us:7.1f} us")
    print("   middleware, cumulative:")
    for line in w["cprofile_middleware_cumulative"][:18]:
        print("     " + line)


if __name__ == "__main__":
    sys.exit(main())
