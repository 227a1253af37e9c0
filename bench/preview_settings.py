#!/usr/bin/env python3
"""Preview settings side by side: render time against quality, per size class.

Usage (from the repository root)::

    .venv/bin/python bench/preview_settings.py [--photo PATH] [SETTING ...]

A SETTING is ``RESAMPLE:QUALITY`` (``ImageEngine.preview_resample`` and
``preview_quality``), e.g. ``LANCZOS:92`` (today's) ``BICUBIC:92``
``BILINEAR:85``. For each, the photo is uploaded into a scratch embedded
store (``save_image``, previews included) and every box of a sample of
bench/run.py's grids (and 1024x768 with the mid-size fits) is rendered
through the miss path (``Renderer.variant``), in process. Prints the upload
time, the ``p2048`` bytes, and per size class the mean and minimum PSNR
against the exact pipeline (bench/quality.py) and the median render time.
Times are single-process and noisy on a shared machine; compare settings
within one run.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402  (bench/quality.py: psnr)
import run  # noqa: E402  (bench/run.py: the grids and the photo)

CLASSES = {
    "mid": ("fit 1000-1099x700-799", 16, ("1024x768",)),
    "small": ("fit 230-259x150-179", 8, ()),
    "crop": ("crop 90-119x90-119!", 8, ()),
}


def sizes() -> dict[str, list[str]]:
    return {
        name: [run.grid_size(grid, box) for box in run.grid_boxes(grid, count)] + list(extra)
        for name, (grid, count, extra) in CLASSES.items()
    }


def measure(data: bytes, setting: str, exact: dict[str, Image.Image]) -> dict:
    from huimages_wsgi import Config, ImageStore
    from huimages_wsgi.core.geometry import scaled_geometry

    resample, quality_text = setting.split(":")
    with Image.open(io.BytesIO(data)) as img:
        upright = ImageOps.exif_transpose(img).convert("RGB")
    with tempfile.TemporaryDirectory(prefix="huimages-preview-settings-") as tmp:
        store = ImageStore(Config(data_dir=Path(tmp) / "data"))
        engine = store.renderer.engine
        engine.preview_resample = Image.Resampling[resample]
        engine.preview_quality = int(quality_text)
        started = time.perf_counter()
        imageid = store.save_image(data)
        upload_ms = (time.perf_counter() - started) * 1000
        with store.blobs.open_derived(imageid, "p2048") as handle:
            p2048_kb = len(handle.read()) / 1024
        result = {"setting": setting, "upload_ms": upload_ms, "p2048_kb": p2048_kb}
        for name, wanted in sizes().items():
            scores, times = [], []
            for text in wanted:
                size = store.size_for(text)
                if text not in exact:
                    geometry = scaled_geometry(upright.width, upright.height, size)
                    exact[text] = upright.resize((geometry.width, geometry.height),
                                                 Image.Resampling.LANCZOS, box=geometry.box)
                started = time.perf_counter()
                path = store.renderer.variant(imageid, size, "jpeg").path
                times.append((time.perf_counter() - started) * 1000)
                with Image.open(path) as served:
                    scores.append(quality.psnr(served, exact[text]))
            result[name] = {"mean_db": statistics.mean(scores), "min_db": min(scores),
                            "median_ms": statistics.median(times), "n": len(wanted)}
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photo", help="a JPEG (default: the bench's phone-like photo)")
    parser.add_argument("settings", nargs="*", default=["LANCZOS:92"],
                        help="RESAMPLE:QUALITY, e.g. LANCZOS:92 BICUBIC:92")
    args = parser.parse_args()
    photo = Path(args.photo) if args.photo else run.default_photo()
    data = photo.read_bytes()
    print(f"photo: {photo.name}")
    print(f"{'setting':<14} {'upload ms':>9} {'p2048 KB':>8}  "
          + "  ".join(f"{name + ' dB mean/min, ms':>26}" for name in CLASSES))
    exact: dict[str, Image.Image] = {}
    for setting in args.settings:
        r = measure(data, setting, exact)
        cells = "  ".join(
            f"{r[n]['mean_db']:>8.2f} {r[n]['min_db']:>6.2f} {r[n]['median_ms']:>8.1f} ms"
            for n in CLASSES
        )
        print(f"{setting:<14} {r['upload_ms']:>9.0f} {r['p2048_kb']:>8.0f}  {cells}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
