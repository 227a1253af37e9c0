#!/usr/bin/env python3
"""Where one cold request of a grid goes, on one original of the ladder, in process.

Usage (from the repository root)::

    .venv/bin/python bench/profile_ladder.py "8MP land" "fit 1000" [--count 40]

Stores 3 copies of the original (bench/ladder.py) in a scratch embedded store, sends
``--count`` requests of the grid (each a box never asked before) through ``make_app``
(the WSGI app the server runs, no HTTP), and prints the median wall time per request
and cProfile's top entries (resize, decode and encode are Pillow's C calls).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ladder  # noqa: E402
import run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("original", help="a word of an original's name, e.g. '8MP land'")
    parser.add_argument("grid", help="the start of a grid's name, e.g. 'fit 1000'")
    parser.add_argument("--count", type=int, default=40)
    args = parser.parse_args(argv)
    from huimages_wsgi import Config, ImageStore
    from huimages_wsgi.web.app import make_app

    original = next(o for o in ladder.LADDER if args.original in o.name)
    grid = next(g for g in run.GRIDS if g.startswith(args.grid))
    data = ladder.ladder_photo(original, run.RESULTS / "ladder").read_bytes()
    with tempfile.TemporaryDirectory(prefix="huimages-profile-") as tmp:
        config = Config(data_dir=Path(tmp))
        store = ImageStore(config)
        ids = [store.save_image(run.with_comment(data, f"profile {i}")) for i in range(3)]
        app = make_app(config, store)

        def get(path: str) -> None:
            environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "",
                       "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "HTTP_HOST": "127.0.0.1",
                       "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http",
                       "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr}
            status: list[str] = []
            b"".join(app(environ, lambda s, h, e=None: status.append(s)))
            if not status[0].startswith("200"):
                raise SystemExit(f"{path}: {status[0]}")

        boxes = run.grid_boxes(grid, args.count + 1)
        get(f"/{run.grid_size(grid, boxes[-1])}/{ids[0]}.jpeg")  # warm-up
        profile, times = cProfile.Profile(), []
        for j, box in enumerate(boxes[:args.count]):
            started = time.perf_counter()
            profile.enable()
            get(f"/{run.grid_size(grid, box)}/{ids[j % len(ids)]}.jpeg")
            profile.disable()
            times.append(time.perf_counter() - started)
    print(f"{original.name}, {grid}: median {statistics.median(times) * 1000:.1f} ms a request"
          f" ({args.count} requests, in process, under cProfile)")
    pstats.Stats(profile).sort_stats("tottime").print_stats(8)
    return 0


if __name__ == "__main__":
    sys.exit(main())
