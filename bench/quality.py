#!/usr/bin/env python3
"""Quality of cold renders and upload previews, as PSNR against the exact pipeline.

Usage (from the repository root)::

    .venv/bin/python bench/quality.py [--photo PATH] [--count N] [--json PATH]

Stores the photo in a scratch embedded store with ``ImageStore.save_image``
(the upload path, previews included) and renders, through
``ImageStore.variant`` (the server's miss path: preview choice, engine,
q85 JPEG), every box of each of bench/run.py's size grids and fixed sizes.
Each served variant is decoded and compared with the exact pipeline: the
original decoded in full, turned upright, resampled with LANCZOS straight to
the output box, not encoded. The same for each preview (against the full
decode resampled with LANCZOS to the preview's size). Prints per row the mean
and minimum PSNR and which source served it.

Run it with another checkout first on ``PYTHONPATH`` (``PYTHONPATH=/path/to/
other/checkout``) to compare two versions of the code on the same photo:
the script prints the ``huimages_wsgi`` it imported.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageChops, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (bench/run.py: the grids and the photo)

FIXED = ("240x160", "75x75!", "1024x768")


def psnr(a: Image.Image, b: Image.Image) -> float:
    """PSNR in dB of two same-size images over R, G and B."""
    hist = ImageChops.difference(a.convert("RGB"), b.convert("RGB")).histogram()
    mse = sum((i % 256) ** 2 * n for i, n in enumerate(hist)) / (a.width * a.height * 3)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def measure(photo: Path, count: int) -> dict:
    import huimages_wsgi
    from huimages_wsgi import Config, ImageStore
    from huimages_wsgi.core.geometry import scaled_geometry
    from huimages_wsgi.core.previews import choose_preview, recorded_previews
    from huimages_wsgi.store.metadata import focus_point

    data = photo.read_bytes()
    with Image.open(io.BytesIO(data)) as img:
        exact_source = ImageOps.exif_transpose(img).convert("RGB")
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="huimages-quality-") as tmp:
        store = ImageStore(Config(data_dir=Path(tmp)))
        imageid = store.save_image(data)
        doc = store.get_imagedoc(imageid)
        previews = recorded_previews(doc)
        for name, (pw, ph) in sorted(previews.items()):
            with store.blobs.open_derived(imageid, name) as handle:
                made = Image.open(io.BytesIO(handle.read()))
                made.load()
            exact = exact_source.resize((pw, ph), Image.Resampling.LANCZOS)
            rows[f"preview {name}"] = {"mean": psnr(exact, made), "min": psnr(exact, made),
                                       "n": 1, "sources": {f"{pw}x{ph}": 1}}
        sizes = {f"fixed {s}": [s] for s in FIXED}
        for grid in run.GRIDS:
            sizes[grid] = [run.grid_size(grid, box) for box in run.grid_boxes(grid, count)]
        for row, specs in sizes.items():
            scores, deltas, sources = [], [], collections.Counter()
            for spec in specs:
                size = store.size_for(spec)
                geometry = scaled_geometry(doc["width"], doc["height"], size, focus_point(doc))
                exact = exact_source.resize(
                    (geometry.width, geometry.height), Image.Resampling.LANCZOS, box=geometry.box
                )
                chosen = choose_preview(previews, doc["width"], doc["height"], size)
                sources[chosen[0] if chosen else "original"] += 1
                with Image.open(store.variant_path(imageid, size)) as served:
                    served.load()
                    scores.append(psnr(exact, served))
                # the exact pipeline's own output, encoded as the server encodes (q85)
                encoded = io.BytesIO()
                exact.save(encoded, "JPEG", quality=store.engine.quality)
                with Image.open(encoded) as reference:
                    deltas.append(scores[-1] - psnr(exact, reference))
            rows[row] = {"mean": statistics.mean(scores), "min": min(scores), "n": len(scores),
                         "delta_mean": statistics.mean(deltas), "delta_min": min(deltas),
                         "sources": dict(sources)}
    return {"code": str(Path(huimages_wsgi.__file__).parent), "photo": str(photo),
            "previews": {k: list(v) for k, v in previews.items()}, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photo", help="a JPEG (default: the bench's phone-like photo)")
    parser.add_argument("--count", type=int, help="boxes per grid (24; 8 with --ladder)")
    parser.add_argument("--json", help="also write the numbers here")
    parser.add_argument("--ladder", action="store_true",
                        help="every original of bench/ladder.py, one after the other")
    parser.add_argument("--only", nargs="*", default=[], help="with --ladder: these originals")
    args = parser.parse_args(argv)
    if args.ladder:
        import ladder

        photos = [ladder.ladder_photo(o, run.RESULTS / "ladder") for o in ladder.LADDER
                  if not args.only or any(word in o.name for word in args.only)]
    else:
        photos = [Path(args.photo).resolve() if args.photo else run.default_photo()]
    count = args.count or (8 if args.ladder else 24)
    reports = []
    for photo in photos:
        report = measure(photo, count)
        reports.append(report)
        print(f"code: {report['code']}\nphoto: {photo.name}, previews {report['previews']}")
        print(f"{'row':<26} {'mean dB':>8} {'min dB':>7} {'vs exact q85 mean/min':>22} "
              f"{'n':>4}  sources")
        for row, r in report["rows"].items():
            sources = ", ".join(f"{k} {v}" for k, v in r["sources"].items())
            delta = (f"{r['delta_mean']:+.2f} / {r['delta_min']:+.2f}" if "delta_mean" in r
                     else "")
            print(f"{row:<26} {r['mean']:8.2f} {r['min']:7.2f} {delta:>22} {r['n']:4d}  "
                  f"{sources}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
