#!/usr/bin/env python3
"""The work a render and an upload cannot skip, per original of the ladder, against thumbor's.

Usage (from the repository root)::

    .venv/bin/python bench/floors.py                     # every original, about 2 min
    .venv/bin/python bench/floors.py --only "8MP land" pano
    /tmp/alt/bin/python bench/floors.py --only land      # with OpenCV and libvips too

Issue 23's targets are ratios against thumbor, so this measures, in this one process on
one core and with nothing else (no HTTP, no storage, no Python of ours), the work each
side cannot skip, and prints the ratio of that work:

* **fit ~1000** (``run.GRIDS``' boxes 1000-1099 x 700-799): thumbor 7's PIL engine decodes
  the original with ``draft`` to the output size, resizes with LANCZOS and encodes q85;
  huimages' floor is only the decode of its ``p2048`` preview at the DCT scale the
  renderer picks, the resample to the output, and the same encode. ``work ratio`` is
  thumbor / floor. The bench's fit ~1000 row has come out at 0.74-1.13 times it (each
  server adds its own costs: HTTP, thumbor's loader and engine, our lookups and
  writes). ``resample`` is Pillow's resample alone (mean of the boxes). thumbor's side
  runs on this process's Pillow, which may be newer than thumbor's own (the bench's
  footer names it). With ``opencv-python-headless``
  or ``pyvips`` importable, the floor is measured again with their resamplers in
  place of Pillow's (``cv2.resize`` INTER_CUBIC; libvips ``reduce`` with lanczos3
  where the decode is larger than the output, Pillow where it is smaller), each with
  the PSNR it loses against the exact pipeline (full decode, LANCZOS, q85) next to
  Pillow's.
* **upload**: a bare full decode (the row's denominator) against the steps the preview
  path cannot skip: the decode at the previews' DCT scale, the resample to ``p2048``
  (up, for 8 MP and 24 MP: no DCT scale lands near 2048) and its encode; the upload
  does more (the hash, ``p512``, the summary, the writes).
* **RSS**: for a progressive JPEG libjpeg keeps every DCT coefficient of the image
  (2 bytes each, 64 a block, all components) until the last scan is read, at any
  DCT scale; add the decoded image at the scale ``run.RSS_PROBE_SIZE`` needs (Pillow
  keeps RGB in 4 bytes a pixel) and you have what a worker must hold at once.

Nothing here is a target: the numbers say which targets the resampler or the decoder
keeps out of reach (bench/README.md, issue 23).
"""

from __future__ import annotations

import argparse
import io
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ladder  # noqa: E402
import run  # noqa: E402
from quality import psnr  # noqa: E402

GRID = "fit 1000-1099x700-799"
MB = 1024 * 1024


def timed(work: Callable[[], Any], repeat: int) -> float:
    """Median milliseconds of ``repeat`` calls (after one to warm up)."""
    work()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def encode(img: Image.Image, quality: int = 85) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def loss(made: Image.Image, exact: Image.Image) -> float:
    """dB the q85 encode of ``made`` loses against the q85 encode of ``exact``."""
    ours = Image.open(io.BytesIO(encode(made)))
    theirs = Image.open(io.BytesIO(encode(exact)))
    return psnr(exact, ours) - psnr(exact, theirs)


Resampler = Callable[[Image.Image, tuple[int, int], tuple[float, float]], Image.Image]


def resamplers() -> dict[str, Resampler]:
    """Pillow's LANCZOS (what huimages uses), and OpenCV's and libvips' where installed;
    each maps the region (0, 0, *region) of the image onto ``size``, as the renderer does
    (a 0.5-pixel misalignment alone costs 0.4 dB)."""
    found: dict[str, Resampler] = {
        "pillow": lambda img, size, region: img.resize(size, Image.Resampling.LANCZOS,
                                                       box=(0, 0, *region)),
    }
    try:
        import cv2
        import numpy

        cv2.setNumThreads(1)

        def opencv(img: Image.Image, size: tuple[int, int], region: tuple[float, float]
                   ) -> Image.Image:
            pixels = numpy.asarray(img)
            if region == img.size:
                return Image.fromarray(cv2.resize(pixels, size, interpolation=cv2.INTER_CUBIC))
            # a region of a fraction of a pixel: cv2.resize maps whole images only
            sx, sy = region[0] / size[0], region[1] / size[1]
            matrix = numpy.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]])
            return Image.fromarray(cv2.warpAffine(
                pixels, matrix, size, flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_REPLICATE))

        found["opencv"] = opencv
    except ImportError:
        pass
    try:
        import pyvips

        pyvips.cache_set_max(0)
        pyvips.concurrency_set(1)

        def vips(img: Image.Image, size: tuple[int, int], region: tuple[float, float]
                 ) -> Image.Image:
            if size[0] > region[0] or size[1] > region[1]:  # libvips upsizes slowly
                return img.resize(size, Image.Resampling.LANCZOS, box=(0, 0, *region))
            pixels = img.tobytes()
            source = pyvips.Image.new_from_memory(pixels, img.width, img.height, 3, "uchar")
            made = source.reduce(region[0] / size[0], region[1] / size[1], kernel="lanczos3")
            made = made.crop(0, 0, min(made.width, size[0]), min(made.height, size[1]))
            return Image.frombytes("RGB", (made.width, made.height), made.write_to_memory())

        found["libvips"] = vips
    except ImportError:
        pass
    return found


def fit_floor(data: bytes, count: int, repeat: int) -> dict:
    from huimages_wsgi import Config, ImageStore
    from huimages_wsgi.core.geometry import scaled_geometry
    from huimages_wsgi.core.previews import choose_preview, preview_reduction, recorded_previews

    with Image.open(io.BytesIO(data)) as img:
        exact_source = ImageOps.exif_transpose(img).convert("RGB")
    with tempfile.TemporaryDirectory(prefix="huimages-floors-") as tmp:
        store = ImageStore(Config(data_dir=Path(tmp)))
        imageid = store.save_image(data)
        doc = store.get_imagedoc(imageid)
        previews = recorded_previews(doc)
        blobs = {}
        for name in previews:
            with store.blobs.open_derived(imageid, name) as handle:
                blobs[name] = handle.read()
    width, height = doc["width"], doc["height"]
    sides = {name: {"ms": [], "loss": []} for name in resamplers()}
    thumbor, resample_ms, original_renders = [], [], 0
    for box in run.grid_boxes(GRID, count):
        size = store.size_for(run.grid_size(GRID, box))
        geometry = scaled_geometry(width, height, size)
        out = (geometry.width, geometry.height)

        def thumbor_work(out: tuple[int, int] = out) -> None:
            img = Image.open(io.BytesIO(data))
            img.draft("RGB", out)
            encode(img.resize(out, Image.Resampling.LANCZOS))

        thumbor.append(timed(thumbor_work, repeat))
        chosen = choose_preview(previews, width, height, size)
        if chosen is None:  # huimages renders this one from the original: no floor here
            original_renders += 1
            continue
        name, pw, ph = chosen
        scale = preview_reduction((pw, ph), out, True) or 1
        exact = exact_source.resize(out, Image.Resampling.LANCZOS)
        region = (pw / scale, ph / scale)  # the whole preview, at the DCT scale

        def decoded(blob: str = name, request: tuple[int, int] = (pw // scale, ph // scale)
                    ) -> Image.Image:
            img = Image.open(io.BytesIO(blobs[blob]))
            img.draft("RGB", request)
            img.load()
            return img

        source = decoded()
        resample_ms.append(timed(lambda img=source, out=out, region=region: img.resize(
            out, Image.Resampling.LANCZOS, box=(0, 0, *region)), repeat))
        for side, resample in resamplers().items():
            def floor_work(resample: Resampler = resample, out: tuple[int, int] = out,
                           region: tuple[float, float] = region,
                           decoded: Callable[[], Image.Image] = decoded) -> Image.Image:
                made = resample(decoded(), out, region)
                encode(made)
                return made

            sides[side]["ms"].append(timed(floor_work, repeat))
            sides[side]["loss"].append(loss(floor_work(), exact))

    t_ms = statistics.mean(thumbor)
    result: dict[str, Any] = {"thumbor_ms": t_ms, "original_renders": original_renders,
                              "boxes": count}
    if resample_ms:
        result["pillow_resample_ms"] = statistics.mean(resample_ms)
    for side, got in sides.items():
        if got["ms"]:
            floor = statistics.mean(got["ms"])
            result[side] = {"floor_ms": floor, "ratio": t_ms / floor,
                            "loss_db_mean": statistics.mean(got["loss"]),
                            "loss_db_worst": min(got["loss"])}
    return result


def upload_floor(data: bytes, repeat: int) -> dict:
    from huimages_wsgi.core.previews import planned_previews, preview_decode_scale

    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
    scale = preview_decode_scale(width, height) or 1
    level = planned_previews(width, height)[0]

    def bare() -> None:
        Image.open(io.BytesIO(data)).load()

    def scaled() -> Image.Image:
        img = Image.open(io.BytesIO(data))
        img.draft("RGB", (width // scale, height // scale))
        img.load()
        return img

    decoded = scaled()
    target = (level[1], level[2])

    def resample() -> Image.Image:
        return decoded.resize(target, Image.Resampling.LANCZOS)

    made = resample() if decoded.size != target else decoded
    steps = {"decode_ms": timed(scaled, repeat),
             "resample_ms": timed(resample, repeat) if decoded.size != target else 0.0,
             "encode_ms": timed(lambda: made.save(io.BytesIO(), "JPEG", quality=92), repeat)}
    bare_ms = timed(bare, repeat)
    return {"bare_decode_ms": bare_ms, "scale": f"1/{scale}",
            "decoded": list(decoded.size), "p2048": list(target), **steps,
            "floor_ratio": sum(steps.values()) / bare_ms}


def rss_floor(original: ladder.Original) -> dict:
    """Bytes a decode for ``run.RSS_PROBE_SIZE`` holds at once (4:2:0: chroma is 1/4)."""
    width, height = original.width, original.height
    probe_w, probe_h = (int(v) for v in run.RSS_PROBE_SIZE.split("x"))  # one box for all
    fit = min(1.0, probe_w / width, probe_h / height)  # never upscaled
    scale = next(s for s in (8, 4, 2, 1) if width / s >= width * fit and height / s >= height * fit)
    luma_blocks = math.ceil(width / 16) * 2 * math.ceil(height / 16) * 2
    coefficients = (luma_blocks + luma_blocks // 2) * 64 * 2 if original.progressive else 0
    decoded = math.ceil(width / scale) * math.ceil(height / scale) * 4
    return {"coefficients_mb": coefficients / MB, "decoded_mb": decoded / MB,
            "scale": f"1/{scale}", "held_mb": (coefficients + decoded) / MB}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=[], help="words of original names")
    parser.add_argument("--boxes", type=int, default=12, help="fit ~1000 boxes an original")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls a measurement")
    args = parser.parse_args(argv)
    print(f"resamplers: {', '.join(resamplers())}")
    for original in ladder.LADDER:
        if args.only and not any(word in original.name for word in args.only):
            continue
        data = ladder.ladder_photo(original, run.RESULTS / "ladder").read_bytes()
        fit = fit_floor(data, args.boxes, args.repeat)
        line = [f"{original.name:15} fit ~1000: thumbor {fit['thumbor_ms']:5.1f} ms"]
        if "pillow_resample_ms" in fit:
            line.append(f"resample {fit['pillow_resample_ms']:4.1f} ms")
        for side in ("pillow", "opencv", "libvips"):
            if side in fit:
                got = fit[side]
                line.append(f"{side} floor {got['floor_ms']:5.1f} ms ratio {got['ratio']:4.2f}x "
                            f"({got['loss_db_mean']:+.2f}/{got['loss_db_worst']:+.2f} dB)")
        if fit["original_renders"]:
            line.append(f"{fit['original_renders']}/{fit['boxes']} from the original")
        print(" | ".join(line), flush=True)
        up = upload_floor(data, args.repeat)
        print(f"{'':15} upload: bare decode {up['bare_decode_ms']:5.1f} ms; decode at "
              f"{up['scale']} {up['decode_ms']:5.1f} + resample {up['decoded'][0]}->"
              f"{up['p2048'][0]} {up['resample_ms']:5.1f} + encode p2048 "
              f"{up['encode_ms']:4.1f} ms = {up['floor_ratio']:.2f}x a bare decode", flush=True)
        rss = rss_floor(original)
        print(f"{'':15} RSS: coefficients {rss['coefficients_mb']:5.0f} MB + decoded at "
              f"{rss['scale']} {rss['decoded_mb']:4.0f} MB = {rss['held_mb']:4.0f} MB held "
              f"for {run.RSS_PROBE_SIZE}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
