#!/usr/bin/env python3
"""Hostile uploads against a real ``huimages serve``: how fast each is refused, and the
peak memory of the server while it refuses it.

Usage (repository root)::

    .venv/bin/python bench/hostile.py [--lifted] [--timeout 120]

Each file (made by tests/imagefactory.py, nothing stored) is posted to
``/_api/images`` of its own fresh ``huimages serve`` (one worker, 127.0.0.1
only), so the peak resident memory (VmHWM, the largest of the server's
processes) is that file's. Prints the status, the wall time of the answer and
the peak. ``--lifted`` starts the servers with the scan and memory limits
lifted (HUIMAGES_MAX_SCANS=1000000, HUIMAGES_MAX_DECODE_BYTES=1T): what the
same files cost without them; a request is given up after ``--timeout``
seconds. Measures only: nothing is asserted (tests/app/test_decode_bounds.py
asserts).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import imagefactory as f  # noqa: E402
from tests.app.test_decode_bounds import high_water_marks, post, served  # noqa: E402

MB = 1 << 20

FILES = {
    "JPEG 8000x8000, progressive, last scan x1000": lambda: f.many_scans_jpeg(8000, 8000, 1000),
    "WebP VP8L header 16383x16383": lambda: f.webp_vp8l_header(16383, 16383),
    "WebP VP8L header 9000x9000": lambda: f.webp_vp8l_header(9000, 9000),
    "animated WebP, 9000x9000 canvas, 1x1 frames": lambda: f.huge_canvas_webp(9000, 9000),
    "GIF 65535x65535 screen, 1x1 frame": lambda: f.huge_canvas_gif(65535, 65535),
    "GIF 9000x9000 screen, 1x1 frame": lambda: f.huge_canvas_gif(9000, 9000),
    "GIF 9000x9000 screen, 20000 1x1 frames": lambda: f.huge_canvas_gif(9000, 9000, 20_000),
    "HEIC, 64x64 coded, ispe 9000x9000": lambda: f.huge_canvas_heic(9000, 9000),
    "(control) JPEG photo 4032x3024": lambda: f.photo_jpeg(4032, 3024, seed=3),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lifted", action="store_true",
                        help="lift HUIMAGES_MAX_SCANS and HUIMAGES_MAX_DECODE_BYTES")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    if args.lifted:
        os.environ.update(HUIMAGES_MAX_SCANS="1000000", HUIMAGES_MAX_DECODE_BYTES="1T")
    print(f"{'file':46} {'bytes':>9} {'status':>6} {'answer s':>9} {'peak MB':>8}")
    for name, make in FILES.items():
        data = make()
        with tempfile.TemporaryDirectory() as work, served(Path(work)) as (base, pid):
            idle = max(high_water_marks(pid).values())
            started = time.perf_counter()
            try:
                status, text = post(base, data, timeout=args.timeout)
            except OSError as exc:  # a timeout, or the worker gone
                status, text = 0, f"no answer: {exc}"
            seconds = time.perf_counter() - started
            peak = max(high_water_marks(pid).values())
        print(f"{name:46} {len(data):9} {status:6} {seconds:9.2f} {peak // MB:8}"
              f"   (idle {idle // MB} MB) {text[:90].strip()}", flush=True)


if __name__ == "__main__":
    main()
