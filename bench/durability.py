#!/usr/bin/env python3
"""What a durable upload costs: SQLite ``synchronous=FULL`` against ``NORMAL``.

Usage (from the repository root)::

    .venv/bin/python bench/durability.py [--uploads N] [--rounds R] [--data-dir DIR]

Uploads N small distinct JPEGs (64x48, so the image work is small and the
syncs show) through ``ImageStore.save_image`` on the embedded default (disk
originals, fsynced with their directory, then the SQLite catalog), once with
the catalog at ``synchronous=FULL`` (the default) and once at ``NORMAL`` (the
old setting), in R interleaved rounds (ABBA), each on a fresh data directory
under ``--data-dir`` (default: ``bench/results/durability-tmp``, on the disk
the server would use; /tmp may be a RAM disk where syncs are free). A
metadata-only row (``update_metadata``: one catalog commit, no file) shows
the commit alone. Prints a table of medians and writes it, with every raw
number, to ``bench/results/durability-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from huimages_wsgi import Config, ImageStore  # noqa: E402
from huimages_wsgi.storage.sqlite import SQLiteCatalog  # noqa: E402

RESULTS = REPO / "bench" / "results"
LEVELS = ("FULL", "NORMAL")


def jpegs(count: int, salt: int) -> list[bytes]:
    out = []
    for i in range(count):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 48), (i % 256, (i // 256) % 256, salt % 256)).save(
            buffer, "JPEG", quality=90, comment=f"{salt}-{i}".encode()
        )
        out.append(buffer.getvalue())
    return out


def one_round(level: str, data_dir: Path, images: list[bytes]) -> dict[str, list[float]]:
    shutil.rmtree(data_dir, ignore_errors=True)
    config = Config(data_dir=data_dir)
    store = ImageStore(config, catalog=SQLiteCatalog(data_dir / "catalog.sqlite3",
                                                     synchronous=level))
    uploads, commits = [], []
    ids = []
    for data in images:
        start = time.perf_counter()
        ids.append(store.save_image(data))
        uploads.append(time.perf_counter() - start)
    for imageid in ids:
        start = time.perf_counter()
        store.update_metadata(imageid, title="t")
        commits.append(time.perf_counter() - start)
    shutil.rmtree(data_dir, ignore_errors=True)
    return {"upload": uploads, "commit": commits}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--data-dir", type=Path, default=RESULTS / "durability-tmp")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    raw: dict[str, dict[str, list[float]]] = {
        level: {"upload": [], "commit": []} for level in LEVELS
    }
    for round_no in range(args.rounds):
        order = LEVELS if round_no % 2 == 0 else tuple(reversed(LEVELS))
        for level in order:
            images = jpegs(args.uploads, salt=round_no * 2 + LEVELS.index(level))
            result = one_round(level, args.data_dir / level.lower(), images)
            for key, values in result.items():
                raw[level][key].extend(values)
    rows = []
    for key in ("upload", "commit"):
        for level in LEVELS:
            values = sorted(raw[level][key])
            rows.append({
                "what": key, "synchronous": level, "n": len(values),
                "median_ms": statistics.median(values) * 1000,
                "p90_ms": values[int(0.9 * (len(values) - 1))] * 1000,
            })
    print(f"{'what':<8} {'synchronous':<12} {'n':>6} {'median ms':>10} {'p90 ms':>8}")
    for row in rows:
        print(f"{row['what']:<8} {row['synchronous']:<12} {row['n']:>6} "
              f"{row['median_ms']:>10.2f} {row['p90_ms']:>8.2f}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"durability-{stamp}.json"
    out.write_text(json.dumps({"rows": rows, "raw": raw, "args": {
        "uploads": args.uploads, "rounds": args.rounds, "data_dir": str(args.data_dir)}},
        indent=1))
    print(f"written to {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
