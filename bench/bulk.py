"""Bulk jobs: the speed-up of ``--jobs 2`` over ``--jobs 1`` (``put``, ``previews --all``).

Makes ``--count`` photos of ``--size`` (default 16 of 3000x2000, about
6 MP), then times the real CLI on the embedded backends, each run in a fresh
data directory: ``put`` of all files, and ``previews --all`` after the
previews were removed (images uploaded before previews existed). Prints a
table and writes ``bench/results/bulk-<timestamp>.json``.

    .venv/bin/python bench/bulk.py [--count 16] [--size 3000x2000] [--jobs 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
sys.path.insert(0, str(BENCH.parent))

from huimages_wsgi import Config, ImageStore  # noqa: E402
from huimages_wsgi.core.previews import PREVIEW_NAMES  # noqa: E402
from tests import imagefactory  # noqa: E402

HUIMAGES = Path(sys.executable).parent / "huimages"


def run(data_dir: Path, *args: str) -> float:
    started = time.perf_counter()
    subprocess.run([str(HUIMAGES), *args], check=True, capture_output=True,
                   env={**os.environ, "HUIMAGES_DATA_DIR": str(data_dir)})
    return time.perf_counter() - started


def strip_previews(data_dir: Path) -> None:
    store = ImageStore(Config(data_dir=data_dir))
    for imageid in store.catalog.ids():
        store.catalog.update(imageid, lambda doc: doc.pop("previews", None))
        for name in PREVIEW_NAMES:
            store.blobs.derived_path(imageid, name).unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--size", default="3000x2000")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    width, height = (int(n) for n in args.size.split("x"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="huimages-bulk-"))
    try:
        files = []
        for seed in range(args.count):
            path = work / f"photo-{seed}.jpg"
            path.write_bytes(imagefactory.photo_jpeg(width, height, seed=seed))
            files.append(str(path))
        rows = []
        for jobs in args.jobs:
            data = work / f"data-{jobs}"
            put = run(data, "put", "--jobs", str(jobs), *files)
            strip_previews(data)
            previews = run(data, "previews", "--all", "--jobs", str(jobs))
            rows.append({"jobs": jobs, "put_seconds": put, "previews_seconds": previews})
        base = rows[0]
        print(f"{args.count} photos of {width}x{height}, {os.cpu_count()} cores")
        print(f"{'jobs':>4} | {'put s':>7} | {'img/s':>6} | {'speed-up':>8} | "
              f"{'previews s':>10} | {'img/s':>6} | {'speed-up':>8}")
        for row in rows:
            row["put_speedup"] = base["put_seconds"] / row["put_seconds"]
            row["previews_speedup"] = base["previews_seconds"] / row["previews_seconds"]
            print(f"{row['jobs']:>4} | {row['put_seconds']:7.2f} | "
                  f"{args.count / row['put_seconds']:6.2f} | {row['put_speedup']:7.2f}x | "
                  f"{row['previews_seconds']:10.2f} | {args.count / row['previews_seconds']:6.2f}"
                  f" | {row['previews_speedup']:7.2f}x")
        out = RESULTS / f"bulk-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.write_text(json.dumps({"count": args.count, "size": [width, height],
                                   "cpus": os.cpu_count(), "rows": rows}, indent=2))
        print(f"written {out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
