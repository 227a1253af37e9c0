#!/usr/bin/env python3
"""What /_metrics costs a cache hit: the standalone app with metrics on and off.

Usage (repository root)::

    .venv/bin/python bench/metrics_cost.py [--rounds 6] [--threads 8] [--requests 2000]

Each round runs, in a fresh interpreter, the whole app (``make_app``) answering
cache hits from ``--threads`` threads, once with metrics on in
``prometheus_client``'s multiprocess mode (as ``huimages serve`` runs it) and
once with ``HUIMAGES_METRICS=0``, alternating, so both see the same noise.
Prints hits per second for each, the medians and their ratio; writes
bench/results/metrics-cost-<timestamp>.json. The machine is noisy: quote the
ratio of the medians, not a single round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import sys, threading, time
sys.path.insert(0, {root!r})
from webob import Request
from huimages_wsgi import Config, make_app
from tests import imagefactory
app = make_app(Config(data_dir={data!r}))
imageid = app.store.save_image(imagefactory.photo_jpeg(1600, 1200, seed=3))
path = f"/320x240/{{imageid}}.jpeg"
Request.blank(path).get_response(app)  # the miss: every request after it is a hit

def once():
    environ = Request.blank(path).environ
    body = app(environ, lambda status, headers, exc_info=None: None)
    for _ in body:
        pass
    if hasattr(body, "close"):
        body.close()

for _ in range(300):
    once()
def work():
    for _ in range({requests}):
        once()
threads = [threading.Thread(target=work) for _ in range({threads})]
started = time.perf_counter()
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print({threads} * {requests} / (time.perf_counter() - started))
"""


def one_round(metrics: bool, threads: int, requests: int) -> float:
    with tempfile.TemporaryDirectory() as base:
        env = {**os.environ, "HUIMAGES_METRICS": "1" if metrics else "0"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if metrics:
            counted = Path(base) / "counted"
            counted.mkdir()
            env["PROMETHEUS_MULTIPROC_DIR"] = str(counted)
        code = WORKER.format(root=str(ROOT), data=str(Path(base) / "data"),
                             threads=threads, requests=requests)
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, check=True)
        return float(done.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--requests", type=int, default=2000, help="per thread")
    args = parser.parse_args()
    results: dict[str, list[float]] = {"on": [], "off": []}
    for number in range(args.rounds):
        for name in ("on", "off") if number % 2 == 0 else ("off", "on"):
            results[name].append(one_round(name == "on", args.threads, args.requests))
            print(f"round {number + 1} metrics {name}: {results[name][-1]:.0f} hits/s",
                  flush=True)
    medians = {name: statistics.median(values) for name, values in results.items()}
    ratio = medians["on"] / medians["off"]
    print(f"median hits/s: metrics on {medians['on']:.0f}, off {medians['off']:.0f}; "
          f"on/off = {ratio:.2f}")
    out = ROOT / "bench" / "results" / f"metrics-cost-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "hits_per_second": results,
                               "medians": medians, "ratio_on_off": ratio}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
