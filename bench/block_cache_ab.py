#!/usr/bin/env python3
"""A/B of Pillow's block cache in ``huimages serve``: cold fit ~1000 renders a second and
worker CPU a request, with the cache (what ``huimages serve`` sets) and without it.

Usage (from the repository root; about 1 min an original)::

    .venv/bin/python bench/block_cache_ab.py "8MP land" "24MP land" "pano land"

For each original of bench/ladder.py named: 8 copies uploaded with ``huimages put``,
then, alternately, a fresh ``huimages serve`` (2 workers) with ``PILLOW_BLOCKS_MAX=0``
(no cache) and one with nothing set (so it restarts itself with the cache,
deploy/pillowblocks.py), ``--rounds`` times each; every round sends 40 boxes of the
fit ~1000 grid never asked before, 4 client threads. Prints each round's req/s and
worker CPU ms a request (from /proc), and each side's mean.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ladder  # noqa: E402
import ladder_bench  # noqa: E402
import run  # noqa: E402

GRID = "fit 1000-1099x700-799"
BOXES = 40
SIDES = {"without": {"PILLOW_BLOCKS_MAX": "0"}, "with": {}}


def one_round(data_dir: Path, work: Path, ids: list[str], boxes: list[tuple[int, int]],
              extra_env: dict[str, str]) -> tuple[float, float]:
    """req/s and worker CPU ms a request of one fresh server over ``boxes``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PILLOW_")} | extra_env
    tag = f"ab-{boxes[0][0]}x{boxes[0][1]}"  # every round starts with a box of its own
    server, workers = ladder_bench.start_huimages(data_dir, work, tag, env)
    port = server.port
    try:
        paths = [f"/{run.grid_size(GRID, box)}/{ids[i % len(ids)]}.jpeg"
                 for i, box in enumerate(boxes)]
        cpu = sum(run.cpu_seconds(pid) for pid in workers)
        result = run.run_load(port, paths, 4, 120, False)
        cpu = sum(run.cpu_seconds(pid) for pid in workers) - cpu
        if result["errors"]:
            raise RuntimeError(f"failed requests: {result['error_samples']}")
        return result["ok"] / result["wall_s"], cpu * 1000 / result["ok"]
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("originals", nargs="+", help="words of original names")
    parser.add_argument("--rounds", type=int, default=3, help="rounds a side")
    args = parser.parse_args(argv)
    for original in ladder.LADDER:
        if not any(word in original.name for word in args.originals):
            continue
        photo = ladder.ladder_photo(original, run.RESULTS / "ladder")
        with tempfile.TemporaryDirectory(prefix="huimages-blocks-") as tmp:
            work = Path(tmp)
            (work / "root").mkdir()
            _, ids = ladder_bench.put_copies(photo, "ab", 8, work / "root", work / "data")
            boxes = run.grid_boxes(GRID, BOXES * args.rounds * len(SIDES))
            rates: dict[str, list[tuple[float, float]]] = {side: [] for side in SIDES}
            for r in range(args.rounds):
                for s, (side, env) in enumerate(SIDES.items()):
                    start = (r * len(SIDES) + s) * BOXES
                    rates[side].append(one_round(work / "data", work, ids,
                                                 boxes[start:start + BOXES], env))
            for side, got in rates.items():
                print(f"{original.name:15} {side:8} req/s "
                      f"{' '.join(f'{rate:5.1f}' for rate, _ in got)} (mean "
                      f"{statistics.mean(rate for rate, _ in got):5.1f}); worker CPU ms a "
                      f"request {' '.join(f'{ms:4.1f}' for _, ms in got)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
