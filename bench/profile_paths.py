#!/usr/bin/env python3
"""Where the time goes on huimages' cold and warm paths, and what would help.

Usage (repository root)::

    .venv/bin/python bench/profile_paths.py [--photo PATH] [--quick] [--e2e]

1. cold phases, in-process, per size: open, EXIF orientation, draft decode,
   transpose, resize, colour conversion, JPEG encode, file write, plus the
   whole ``ImageStore.variant`` (catalog lookup, lock, temp file, rename);
   and the top functions under cProfile;
2. engine experiments on a COPY (bench/experiments/engine_copy.py): draft_gap,
   reducing_gap, resampling filter; ms per render (interleaved rounds,
   median), output bytes and PSNR against a reference (full decode, exact
   LANCZOS, no JPEG round trip);
3. warm path, in-process: bare file_wrapper app vs the middleware vs the
   fast-path COPY (bench/experiments/wsgi_fast.py), microseconds per call;
4. ``--e2e``: the same suggestions end to end under gunicorn (2 workers):
   cold 1024x768 and 240x160 with the original vs the experiment app, and
   warm hits with wrk through original / fast path / bare app (interleaved).

Writes bench/results/profile-<timestamp>.json and prints a summary.
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
from bench.experiments import engine_copy  # noqa: E402
from huimages_wsgi import engine as engine_mod  # noqa: E402
from huimages_wsgi.config import Config  # noqa: E402
from huimages_wsgi.geometry import scaled_geometry  # noqa: E402
from huimages_wsgi.sizes import parse_size  # noqa: E402
from huimages_wsgi.store import ImageStore  # noqa: E402
from huimages_wsgi.wsgi import make_app  # noqa: E402

SIZES = run.SIZES


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1000


# -- 1. cold phases ------------------------------------------------------------------


def phases(engine: Any, data: bytes, size_text: str, tmpdir: Path) -> dict[str, float]:
    """engine.render, step by step, in the same order (timings in seconds)."""
    size = parse_size(size_text)
    c = time.perf_counter
    t0 = c()
    img = engine._open(io.BytesIO(data))
    t1 = c()
    orientation = engine_mod._orientation(img)
    upright_w, upright_h = engine_mod._upright_size(img, orientation)
    geometry = scaled_geometry(upright_w, upright_h, size)
    t2 = c()
    img = engine._decode_scaled(img, orientation, geometry.box, geometry.width, geometry.height)
    t3 = c()
    profile = img.info.get("icc_profile")
    if orientation != 1:
        img = img.transpose(engine_mod._TRANSPOSE[orientation])
    t4 = c()
    sx, sy = img.width / upright_w, img.height / upright_h
    left, top, right, bottom = geometry.box
    box = (left * sx, top * sy, right * sx, bottom * sy)
    img = img.resize(
        (geometry.width, geometry.height),
        Image.Resampling.LANCZOS,
        box=box,
        reducing_gap=engine.reducing_gap,
    )
    t5 = c()
    img = engine_mod._to_srgb(img, profile)
    t6 = c()
    out = io.BytesIO()
    img.save(out, "JPEG", quality=engine.quality)
    t7 = c()
    fd, tmp = tempfile.mkstemp(dir=tmpdir, suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(out.getvalue())
    os.chmod(tmp, 0o644)
    os.replace(tmp, tmpdir / "out.jpeg")
    t8 = c()
    return {
        "open": t1 - t0,
        "exif+geometry": t2 - t1,
        "draft decode": t3 - t2,
        "transpose": t4 - t3,
        "resize": t5 - t4,
        "to_srgb": t6 - t5,
        "encode": t7 - t6,
        "file write": t8 - t7,
        "total": t8 - t0,
    }


def cold_phases(data: bytes, iterations: dict[str, int], tmpdir: Path) -> dict[str, Any]:
    engine = engine_mod.ImageEngine()
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
        size = store.parse_size(size_text)
        times = []
        for imageid in ids:
            start = time.perf_counter()
            store.variant(imageid, size)
            times.append(time.perf_counter() - start)
        out[size_text] = median_ms(times[1:])
    return out


def cprofile_top(data: bytes, count: int, top: int = 7) -> dict[str, list[str]]:
    engine = engine_mod.ImageEngine()
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
    "original (draft_gap 2, reducing_gap 2, LANCZOS)": {},
    "draft_gap 1.0": {"draft_gap": 1.0},
    "draft_gap 1.5": {"draft_gap": 1.5},
    "reducing_gap 1.0": {"reducing_gap": 1.0},
    "reducing_gap None (exact)": {"reducing_gap": None},
    "BICUBIC": {"resample": Image.Resampling.BICUBIC},
    "draft_gap 1.0 + BICUBIC": {"draft_gap": 1.0, "resample": Image.Resampling.BICUBIC},
}


def engine_experiments(data: bytes, rounds: int, per_round: dict[str, int]) -> dict[str, Any]:
    engines = {name: engine_copy.ImageEngine(**kw) for name, kw in VARIANTS.items()}
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
    from bench.experiments.wsgi_fast import make_app as make_fast

    namespace: dict[str, Any] = {}
    os.environ["BENCH_BARE_FILE"] = str(cached)
    exec(run.BARE_APP, namespace)  # noqa: S102 - our own module text
    config = Config(data_dir=data_dir)
    apps = {
        "bare": namespace["app"],
        "original": make_app(config),
        "lean copy": make_fast(config, kind="lean"),
        "fast copy": make_fast(config),
    }
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

    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list, exc_info: Any = None) -> None:
        captured["status"], captured["headers"] = status, headers

    headers = {}
    for name, app in apps.items():
        body = app(environ(), start_response)
        body.close()
        headers[name] = captured["headers"]
    same = headers["original"] == headers["fast copy"] == headers["lean copy"]
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
        apps["original"](environ(), start_response).close()
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
    return {
        "us_per_call": result,
        "fast_headers_identical": same,
        "headers_original": headers["original"],
        "cprofile_original_cumulative": top,
    }


# -- 4. end to end -------------------------------------------------------------------


def e2e(photo: Path, quick: bool, work: Path) -> dict[str, Any]:
    n = 16 if quick else 60
    data_dir = work / "e2e-data"
    copies, names, ids = run.upload_copies(photo, n, work, data_dir)
    del copies, names
    ports = {name: run.free_port() for name in ("original", "experiment", "lean", "bare")}
    gunicorn = str(run.venv_bin("gunicorn"))
    servers = {
        "original": run.Server(
            "original",
            [
                str(run.venv_bin("huimages")),
                "--data-dir",
                str(data_dir),
                "serve",
                "--port",
                str(ports["original"]),
                "--workers",
                "2",
            ],
            ports["original"],
            work / "original.log",
        ),
        "experiment": run.Server(
            "experiment",
            [
                gunicorn,
                "-w",
                "2",
                "-b",
                f"{run.HOST}:{ports['experiment']}",
                "--no-control-socket",
                "--chdir",
                str(ROOT),
                "bench.experiments.fast_app:app",
            ],
            ports["experiment"],
            work / "experiment.log",
            env={**os.environ, "HUIMAGES_DATA_DIR": str(data_dir), "BENCH_DRAFT_GAP": "1.0"},
        ),
        "lean": run.Server(
            "lean",
            [
                gunicorn,
                "-w",
                "2",
                "-b",
                f"{run.HOST}:{ports['lean']}",
                "--no-control-socket",
                "--chdir",
                str(ROOT),
                "bench.experiments.fast_app:app",
            ],
            ports["lean"],
            work / "lean.log",
            env={**os.environ, "HUIMAGES_DATA_DIR": str(data_dir), "BENCH_WSGI": "lean"},
        ),
    }
    result: dict[str, Any] = {
        "experiment": "FastHitMiddleware + engine copy draft_gap=1.0",
        "lean": "LeanResponseMiddleware (warm rows only)",
        "cold_requests_per_side": n,
    }
    try:
        for server in servers.values():
            server.wait_ready("/")
        for size in ("1024x768", "240x160"):
            side: dict[str, list] = {"original": [], "experiment": []}
            half = n // 2
            for r in range(2):
                chunk = ids[r * half : (r + 1) * half]
                order = ("original", "experiment") if r == 0 else ("experiment", "original")
                for name in order:
                    run.clear_cache(data_dir, size)
                    paths = [f"/{size}/{i}.jpeg" for i in chunk]
                    side[name].append(run.run_load(ports[name], paths, 4, 120, False))
            merged = {k: run.merge_rounds(v) for k, v in side.items()}
            result[f"cold {size}"] = {
                **{
                    k: {x: v[x] for x in ("rps", "p50_ms", "p99_ms", "errors")}
                    for k, v in merged.items()
                },
                "experiment/original": merged["experiment"]["rps"] / merged["original"]["rps"],
            }
            run.log(f"e2e cold {size}: {result[f'cold {size}']}")
        run.run_load(ports["original"], [f"/{run.WARM_SIZE}/{ids[0]}.jpeg"], 1, 60, False)
        cached = data_dir / "cache" / run.WARM_SIZE / f"{ids[0]}.jpeg"
        if not cached.exists():
            raise RuntimeError("warm file missing")
        (work / "bare_app.py").write_text(run.BARE_APP)
        servers["bare"] = run.Server(
            "bare",
            [
                gunicorn,
                "-w",
                "2",
                "-b",
                f"{run.HOST}:{ports['bare']}",
                "--no-control-socket",
                "--chdir",
                str(work),
                "bare_app:app",
            ],
            ports["bare"],
            work / "bare.log",
            env={**os.environ, "BENCH_BARE_FILE": str(cached)},
        )
        servers["bare"].wait_ready("/")
        script = work / "check.lua"
        script.write_text(run.WRK_LUA)
        wrk = shutil.which("wrk") or "/usr/bin/wrk"
        runs: dict[str, list] = {k: [] for k in ports}
        seconds, repeats = (2, 2) if quick else (5, 4)
        for r in range(repeats):
            order = list(ports) if r % 2 == 0 else list(reversed(list(ports)))
            for name in order:
                url = f"http://{run.HOST}:{ports[name]}/{run.WARM_SIZE}/{ids[0]}.jpeg"
                runs[name].append(run.run_wrk(wrk, script, url, seconds, 4))
        warm = {k: run.merge_wrk(v) for k, v in runs.items()}
        result["warm hit"] = {
            **{
                k: {x: v[x] for x in ("rps", "p50_ms", "p99_ms", "errors")} for k, v in warm.items()
            },
            "original/bare": warm["original"]["rps"] / warm["bare"]["rps"],
            "experiment/bare": warm["experiment"]["rps"] / warm["bare"]["rps"],
            "lean/bare": warm["lean"]["rps"] / warm["bare"]["rps"],
        }
        run.log(f"e2e warm: {result['warm hit']}")
    finally:
        run.Server.stop_all()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photo")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--e2e", action="store_true", help="also measure under gunicorn")
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
        run.log("engine experiments")
        per_round = {"240x160": 2 if q else 6, "75x75!": 2 if q else 6, "1024x768": 1 if q else 3}
        report["engine_experiments"] = engine_experiments(data, 2 if q else 4, per_round)
        run.log("warm path in-process")
        store = ImageStore(Config(data_dir=work / "data"))
        imageid = store.save_image(data)
        cached = store.variant(imageid, store.parse_size(run.WARM_SIZE))
        report["warm_inprocess"] = warm_inprocess(
            work / "data", imageid, cached, 500 if q else 5000
        )
        if args.e2e:
            run.log("end to end")
            report["e2e"] = e2e(photo, q, work)
    finally:
        run.Server.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    out = run.RESULTS / f"profile-{time.strftime('%Y%m%d-%H%M%S')}.json"
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
    print("\n== engine experiments on bench/experiments/engine_copy.py ==")
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
    print(f"   lean/fast headers identical to original: {w['fast_headers_identical']}")
    print("   original, cumulative:")
    for line in w["cprofile_original_cumulative"][:18]:
        print("     " + line)
    if "e2e" in report:
        print("\n== end to end (gunicorn, 2 workers) ==")
        print(json.dumps(report["e2e"], indent=1))


if __name__ == "__main__":
    sys.exit(main())
