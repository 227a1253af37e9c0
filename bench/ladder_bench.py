"""``bench/run.py --ladder`` (``make bench``): every row on every original of the
resolution ladder (bench/ladder.py), against thumbor, and the verdict of each row is
its worst original.

Per original, in this order: the upload rows in process (``run.upload_cost``:
``save_image`` against a bare ``Image.open().load()`` of the same bytes, interleaved);
``COPIES`` copies uploaded with ``huimages put``; a fresh ``huimages serve`` (2
workers, so its peak RSS is this original's alone); the three grids of sizes never
asked before (``run.GRIDS``), ``REQUESTS`` requests per side and grid in 2 rounds
interleaved ABBA with thumbor (every request a box never asked before, the copies
taken in turn); 8 renders of ``run.RSS_PROBE_SIZE`` (from the original where no
preview serves it); the workers' VmHWM. thumbor runs once for the whole ladder
(file loader over every copy). The warm row runs once, at the end, on the last
original's server: it measures a cache hit, the same file whatever the original.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import ladder
import run
from PIL import Image

COPIES = 8
REQUESTS = 80
QUICK_REQUESTS = 16
UPLOAD_COPIES = 5


def put_copies(photo: Path, prefix: str, count: int, root: Path, data_dir: Path
               ) -> tuple[list[str], list[str]]:
    """``count`` copies of ``photo`` (a different COM segment each) in ``root`` (thumbor's
    file loader root), uploaded with ``huimages put``; their file names and IDs."""
    data = photo.read_bytes()
    names = []
    for i in range(count):
        name = f"{prefix}-{i:03d}.jpg"
        (root / name).write_bytes(run.with_comment(data, f"huimages bench {prefix} copy {i}"))
        names.append(name)
    started = time.perf_counter()
    result = subprocess.run(
        [str(run.venv_bin("huimages")), "--data-dir", str(data_dir), "put",
         *[str(root / n) for n in names]],
        capture_output=True, text=True, check=False,
    )
    ids = result.stdout.split()
    if result.returncode != 0 or len(set(ids)) != count:
        raise RuntimeError(f"upload failed ({len(set(ids))} IDs): {result.stderr[-2000:]}")
    elapsed = time.perf_counter() - started
    run.log(f"huimages put: {elapsed / count * 1000:.0f} ms a photo ({prefix})")
    return names, ids


def start_huimages(data_dir: Path, work: Path, tag: str, env: dict[str, str] | None = None
                   ) -> tuple[run.Server, list[int]]:
    """A fresh ``huimages serve`` (2 workers) on ``data_dir``, with ``env`` (default: this
    process's environment), once it answers; it and its workers' pids."""
    port = run.free_port()
    server = run.Server(
        "huimages",
        [str(run.venv_bin("huimages")), "--data-dir", str(data_dir), "serve",
         "--host", run.HOST, "--port", str(port), "--workers", "2"],
        port, work / f"huimages-{tag}.log", env=env,
    )
    server.wait_ready("/")
    time.sleep(1.0)  # let forked workers settle
    workers = server.children()
    if len(workers) != 2:
        raise RuntimeError(f"expected 2 huimages workers, got {workers}")
    return server, workers


def start_thumbor(root: Path, work: Path) -> tuple[run.Server, list[int], str]:
    thumbor_bin, version = run.ensure_thumbor()
    port = run.free_port()
    conf = work / "thumbor.conf"
    conf.write_text(run.THUMBOR_CONF.format(root=str(root)))
    server = run.Server(
        "thumbor",
        [str(thumbor_bin), "-i", run.HOST, "-p", str(port), "-c", str(conf),
         "--processes", "2", "-l", "warning"],
        port, work / "thumbor.log",
    )
    server.wait_ready("/healthcheck")
    time.sleep(1.0)
    workers = server.children()
    if len(workers) != 2:
        raise RuntimeError(f"expected 2 thumbor processes, got {workers}")
    return server, workers, version


def grid_rows(
    label: str, data_dir: Path, servers: dict[str, tuple[int, list[int]]],
    ids: list[str], names: list[str], requests: int, limit: float,
) -> tuple[list[dict], dict]:
    """The three grid rows of one original: ``requests`` boxes per side, 2 rounds ABBA."""
    rows, raw = [], {}
    per_round = requests // 2
    for grid, (_, _, _, t_pattern, target) in run.GRIDS.items():
        boxes = run.grid_boxes(grid, per_round * 2)
        results: dict[str, list[dict]] = {"h": [], "t": []}
        splits: dict[str, list[list[float]]] = {"h": [], "t": []}
        for r in range(2):
            chunk = range(r * per_round, (r + 1) * per_round)
            paths = {
                "h": [f"/{run.grid_size(grid, boxes[j])}/{ids[j % len(ids)]}.jpeg"
                      for j in chunk],
                "t": [t_pattern.format(w=boxes[j][0], h=boxes[j][1],
                                       name=names[j % len(names)]) for j in chunk],
            }
            for who in (("h", "t") if r % 2 == 0 else ("t", "h")):
                if who == "h":
                    for j in chunk:
                        run.clear_cache(data_dir, run.grid_size(grid, boxes[j]))
                port, pids = servers[who]
                before = {p: run.cpu_seconds(p) for p in pids}
                results[who].append(run.run_load(port, paths[who], 4, limit, False))
                splits[who].append(run.cpu_split(pids, before))
        h, t = run.merge_rounds(results["h"]), run.merge_rounds(results["t"])
        h["cpu_split"], t["cpu_split"] = splits["h"], splits["t"]
        raw[grid] = {"huimages": h, "thumbor": t}
        run.log(f"{label} cold {grid}: huimages {h['rps']:.1f}/s thumbor {t['rps']:.1f}/s")
        rows.append(run.row(f"{label} {short(grid)}", "huimages", h, "thumbor", t, target,
                            note=f"{per_round * 2} boxes, {len(ids)} copies"))
    return rows, raw


def short(grid: str) -> str:
    """``fit 1000-1099x700-799`` -> ``fit ~1000``."""
    kind, box = grid.split(" ", 1)
    return f"{kind} ~{box.split('-')[0]}"


def rss_row(label: str, port: int, workers: list[int], t_workers: list[int],
            ids: list[str], limit: float, photo_size: str) -> tuple[dict, dict]:
    # One request at a time: two large decodes at once on a 2-core node make the
    # admission answer 503 when the node expects them to wait too long (the 24 and 48 MP
    # originals did, in one run of two), which is right, but not what this row measures:
    # the memory one worker holds for a decode of the whole original.
    probe = run.run_load(
        port, [f"/{run.RSS_PROBE_SIZE}/{ids[i % len(ids)]}.jpeg"
               for i in range(run.RSS_PROBE_COUNT)], 1, limit, False)
    h_rss = [(run.vm_kb(pid, "VmHWM") or 0) / 1024 for pid in workers]
    t_rss = [(run.vm_kb(pid, "VmHWM") or 0) / 1024 for pid in t_workers]
    worst = max(h_rss)
    ok = worst < run.RSS_TARGET_MB and not probe["errors"]
    return {
        "row": f"{label} worker RSS",
        "a_name": "huimages", "a": {"value": worst, "unit": "MB", "per_worker": h_rss},
        "b_name": "thumbor", "b": {"value": max(t_rss), "unit": "MB", "per_worker": t_rss},
        "ratio": None, "target": f"< {run.RSS_TARGET_MB:g} MB",
        "result": "PASS" if ok else "FAIL",
        "note": f"VmHWM after the grids and {run.RSS_PROBE_COUNT}x {run.RSS_PROBE_SIZE} "
                f"of the {photo_size} original",
    }, probe


def upload_rows(label: str, photo: Path, work: Path, count: int) -> tuple[list[dict], dict]:
    upload = run.upload_cost(photo.read_bytes(), work, count)
    ms = upload["save_image_ms"]
    stored = upload["stored_bytes_per_photo"]
    previews_kb = sum(v for k, v in stored.items() if k != "original") / 1024
    ratio = ms["with"] / ms["decode"]
    run.log(f"{label} upload: save_image {ms['with']:.0f} ms, decode {ms['decode']:.0f} ms, "
            f"{ratio:.2f}x")
    return [
        {
            "row": f"{label} upload", "a_name": "save_image",
            "a": {"value": ms["with"], "unit": "ms"}, "b_name": "open+load",
            "b": {"value": ms["decode"], "unit": "ms"}, "ratio": ratio,
            "target": f"<= {run.UPLOAD_TARGET:g}x",
            "result": "PASS" if ratio <= run.UPLOAD_TARGET else "FAIL",
            "note": f"median of {count}, in process; without previews {ms['without']:.0f} ms",
        },
        {
            "row": f"{label} stored (info)", "a_name": "previews",
            "a": {"value": previews_kb, "unit": "KB"}, "b_name": "original",
            "b": {"value": stored.get("original", 0) / 1024, "unit": "KB"},
            "ratio": previews_kb * 1024 / (stored.get("original") or 1), "target": "-",
            "result": "INFO",
            "note": ", ".join(f"{k} {v / 1024:.0f} KB" for k, v in stored.items()
                              if k != "original"),
        },
    ], upload


def warm_row(data_dir: Path, port: int, imageid: str, work: Path, runs: int,
             seconds: float) -> tuple[dict, dict]:
    wrk = shutil.which("wrk") or "/usr/bin/wrk"
    conn = http.client.HTTPConnection(run.HOST, port, timeout=60)
    conn.request("GET", f"/{run.WARM_SIZE}/{imageid}.jpeg")
    conn.getresponse().read()
    conn.close()
    cached = data_dir / "cache" / run.WARM_SIZE / f"{imageid}.jpeg"
    (run.RESULTS / "bare_app.py").write_text(run.BARE_APP)
    bport = run.free_port()
    bare = run.Server(
        "bare", [str(run.venv_bin("gunicorn")), "-w", "2", "-b", f"{run.HOST}:{bport}",
                 "--no-control-socket", "--chdir", str(run.RESULTS), "bare_app:app"],
        bport, work / "bare.log", env={**os.environ, "BENCH_BARE_FILE": str(cached)},
    )
    bare.wait_ready("/")
    script = work / "check.lua"
    script.write_text(run.WRK_LUA)
    m_runs, b_runs = [], []
    for r in range(runs):
        for who in (("m", "b") if r % 2 == 0 else ("b", "m")):
            url_port = port if who == "m" else bport
            url = f"http://{run.HOST}:{url_port}/{run.WARM_SIZE}/{imageid}.jpeg"
            (m_runs if who == "m" else b_runs).append(run.run_wrk(wrk, script, url, seconds, 4))
    bare.stop()
    m, b = run.merge_wrk(m_runs), run.merge_wrk(b_runs)
    run.log(f"warm hit: middleware {m['rps']:.0f}/s bare {b['rps']:.0f}/s")
    return (run.row(f"warm hit {run.WARM_SIZE}", "middleware", m, "bare app", b,
                    run.WARM_TARGET), {"middleware": m, "bare": b})


def bench_ladder(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    requests = args.requests or (QUICK_REQUESTS if args.quick else REQUESTS)
    limit = 60.0 if args.quick else 240.0
    originals = [o for o in ladder.LADDER if not args.only or any(
        word in o.name for word in args.only)]
    photos = {o.name: ladder.ladder_photo(o, run.RESULTS / "ladder") for o in originals}
    work = Path(tempfile.mkdtemp(prefix="huimages-ladder-"))
    rows: list[dict] = []
    raw: dict[str, Any] = {}
    try:
        root, data_dir = work / "photos", work / "data"
        root.mkdir()
        thumbor, t_workers, version = start_thumbor(root, work)
        for index, original in enumerate(originals):
            label, photo = original.name, photos[original.name]
            up_rows, upload = upload_rows(label, photo, work / f"upload-{index}",
                                          2 if args.quick else UPLOAD_COPIES)
            names, ids = put_copies(photo, f"o{index}", 4 if args.quick else COPIES,
                                    root, data_dir)
            server, h_workers = start_huimages(data_dir, work, str(index))
            servers = {"h": (server.port, h_workers), "t": (thumbor.port, t_workers)}
            g_rows, g_raw = grid_rows(label, data_dir, servers, ids, names, requests, limit)
            rss, probe = rss_row(label, server.port, h_workers, t_workers, ids, limit,
                                 f"{original.width}x{original.height}")
            rows += g_rows + up_rows + [rss]
            raw[label] = {"grids": g_raw, "upload": upload, "rss_probe": probe,
                          "photo": str(photo), "bytes": photo.stat().st_size}
            if index == len(originals) - 1:
                warm, raw["warm hit"] = warm_row(data_dir, server.port, ids[0], work,
                                                 2 if args.quick else 6,
                                                 2.0 if args.quick else 4.0)
                rows.append(warm)
            server.stop()
    finally:
        run.Server.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "mode": "ladder quick" if args.quick else "ladder",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_1m_before_after": [load_before[0], os.getloadavg()[0]]},
        "versions": {"python": platform.python_version(), "pillow_huimages": Image.__version__,
                     "thumbor": version},
        "settings": {"requests_per_side_and_grid": requests, "copies": COPIES,
                     "upload_copies": UPLOAD_COPIES, "concurrency": 4, "rounds": 2},
        "originals": [o.__dict__ for o in originals],
        "rows": rows,
        "raw": run.strip_latencies(raw),
    }


def verdicts(report: dict) -> list[str]:
    """Per kind of row, the worst original and whether every original met the target."""
    kinds: dict[str, list[dict]] = {}
    for r in report["rows"]:
        if r["result"] == "INFO":
            continue
        kind = r["row"].split(" ", 3)[-1] if not r["row"].startswith("warm") else r["row"]
        kinds.setdefault(kind, []).append(r)
    lines = ["", "verdict per row (the worst original decides):"]
    for kind, group in kinds.items():
        if group[0]["ratio"] is None:  # RSS: the largest
            worst = max(group, key=lambda r: r["a"]["value"])
            value = f"{worst['a']['value']:.0f} MB"
        elif kind.endswith("upload"):
            worst = max(group, key=lambda r: r["ratio"])
            value = f"{worst['ratio']:.2f}x"
        else:
            worst = min(group, key=lambda r: r["ratio"] or 0)
            value = f"{worst['ratio']:.2f}x"
        failed = [r for r in group if r["result"] != "PASS"]
        result = "PASS" if not failed else f"FAIL ({len(failed)} of {len(group)})"
        who = worst["row"][: -len(kind)].strip() or "-"
        lines.append(f"  {kind:<14} worst {value:>8} ({who}), target {worst['target']}: {result}")
    return lines


def render(report: dict) -> str:
    table = run.render_table({**report, "photo": None, "settings": None, "rows": report["rows"]},
                             footer=False)
    s = report["settings"]
    tail = (f"{report['mode']}; {len(report['originals'])} originals; grids: "
            f"{s['requests_per_side_and_grid']} requests/side, {s['copies']} copies each, "
            f"concurrency 4, 2 ABBA rounds; upload: median of {s['upload_copies']}; "
            f"{report['versions']['thumbor']}; {report['machine']['cpus']} CPUs, 1-min load "
            "before/after " + "/".join(
                f"{x:.1f}" for x in report["machine"]["loadavg_1m_before_after"]))
    return "\n".join([table, *verdicts(report), "", tail])
