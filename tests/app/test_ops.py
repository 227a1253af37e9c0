"""/_health, /_metrics and the structured logs: in-process on both backends, with a backend
really down, and on a multi-worker ``huimages serve``."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from webob import Request

from huimages_wsgi import Config, make_app
from huimages_wsgi.web.logs import JsonFormatter, LogfmtFormatter
from huimages_wsgi.web.metrics import BUCKETS

from .. import imagefactory as f
from ..backends import backend_config
from ..conftest import LiveServer

BOTH = pytest.mark.parametrize("backend", ["embedded", "s3+couch"], indirect=True)
# One sample line of the Prometheus text format 0.0.4.
SAMPLE_RE = re.compile(r'([a-z_]+)(\{[a-z]+="[^"]*"\})? (-?[0-9.e+]+|\+Inf)')


def get(app, path, **kwargs):
    return Request.blank(path, **kwargs).get_response(app)


def parse_metrics(text: str) -> dict[str, float]:
    """Sample name (with labels) -> value; fails on any line outside the format."""
    samples = {}
    types = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
            continue
        match = SAMPLE_RE.fullmatch(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    # `huimages serve` also shows its change-feed follower (test_cluster.py covers those)
    types = {name: kind for name, kind in types.items()
             if not name.startswith("huimages_follower_")}
    assert types == {
        "huimages_requests_total": "counter",
        "huimages_cache_hits_total": "counter",
        "huimages_cache_misses_total": "counter",
        "huimages_bytes_served_total": "counter",
        "huimages_generation_seconds": "histogram",
        # render admission (admission.py)
        "huimages_render_queue_depth": "gauge",
        "huimages_renders_running": "gauge",
        "huimages_render_waits_total": "counter",
        "huimages_render_wait_seconds_total": "counter",
        "huimages_render_refusals_total": "counter",
    }
    return samples


def bucket(le: str) -> str:
    return f'huimages_generation_seconds_bucket{{le="{le}"}}'


# -- health ----------------------------------------------------------------------------------


@BOTH
def test_health_is_ok_when_every_backend_answers(any_config):
    app = make_app(any_config)
    response = get(app, "/_health")
    assert response.status_int == 200, response.body
    assert response.content_type == "application/json" and response.cache_control.no_store
    report = response.json
    assert report["status"] == "ok"
    assert set(report["checks"]) == {"blobs", "catalog", "cache"}
    assert all(check["ok"] for check in report["checks"].values())
    if any_config.couch_server:
        assert report["checks"]["catalog"]["backend"].startswith("couchdb:")
        assert report["checks"]["blobs"]["backend"].startswith("s3://")
    assert get(app, "/_health", method="HEAD").status_int == 200
    assert get(app, "/_health", method="POST").status_int == 405


def test_health_reports_an_unwritable_cache(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    app = make_app(Config(data_dir=tmp_path / "data", cache_dir=blocker / "cache"))
    response = get(app, "/_health")
    assert response.status_int == 503
    assert response.json["status"] == "degraded"
    assert response.json["checks"]["cache"]["ok"] is False
    assert response.json["checks"]["catalog"]["ok"] is True


def test_health_reports_an_unwritable_originals_directory(tmp_path):
    """The embedded blob store checks its disk like the cache does."""
    app = make_app(Config(data_dir=tmp_path / "data"))
    assert get(app, "/_health").status_int == 200
    originals = app.store.blobs.root
    originals.rmdir()  # the first check created it
    originals.write_text("")  # a file where the directory should be
    response = get(app, "/_health")
    assert response.status_int == 503
    assert response.json["checks"]["blobs"]["ok"] is False
    assert "not writable" in response.json["checks"]["blobs"]["error"]
    assert response.json["checks"]["catalog"]["ok"] is True


@pytest.mark.parametrize("server_name, failing", [("own_s3", "blobs"), ("own_couch", "catalog")])
def test_health_is_503_while_a_backend_is_down(
    tmp_path, own_s3, own_couch, monkeypatch, request, server_name, failing
):
    for key, value in own_s3.env.items():
        monkeypatch.setenv(key, value)
    config = backend_config("s3+couch", tmp_path / "data", own_s3, own_couch,
                            backend_timeout=1.5)
    app = make_app(config)
    assert get(app, "/_health").status_int == 200
    server = request.getfixturevalue(server_name)
    server.stop()
    try:
        response = get(app, "/_health")
        assert response.status_int == 503
        report = response.json
        assert report["status"] == "degraded"
        assert report["checks"][failing]["ok"] is False and report["checks"][failing]["error"]
        healthy = {"blobs", "catalog", "cache"} - {failing}
        assert all(report["checks"][name]["ok"] for name in healthy)
    finally:
        server.start()
    deadline = time.monotonic() + 20
    while get(app, "/_health").status_int != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert get(app, "/_health").json["status"] == "ok"


def test_liveness_and_readiness_follow_a_couchdb_outage(tmp_path, own_s3, own_couch,
                                                       monkeypatch):
    """/_health/live answers from the process alone; /_health/ready turns 503 within 5 s
    of CouchDB going down and 200 within 5 s of its return."""
    for key, value in own_s3.env.items():
        monkeypatch.setenv(key, value)
    config = backend_config("s3+couch", tmp_path / "data", own_s3, own_couch,
                            backend_timeout=1.5)
    app = make_app(config)

    def within(seconds, path, status):
        deadline = time.monotonic() + seconds
        while (answer := get(app, path)).status_int != status:
            assert time.monotonic() < deadline, (path, answer.status, answer.body)
            time.sleep(0.1)
        return answer

    within(5, "/_health/ready", 200)
    own_couch.stop()
    try:
        ready = within(5, "/_health/ready", 503)
        assert ready.json["checks"]["catalog"]["ok"] is False
        live = get(app, "/_health/live")
        assert live.status_int == 200 and live.json["status"] == "ok"
    finally:
        own_couch.start()
    within(5, "/_health/ready", 200)


def test_liveness_never_asks_a_backend_and_readiness_is_reused_for_a_second(tmp_path):
    from huimages_wsgi.web.health import READY_SECONDS, HealthApp

    app = make_app(Config(data_dir=tmp_path / "data"))
    health = HealthApp(app.store, clock=lambda: now[0])
    now, probes, check = [100.0], [], app.store.check

    def counted_check():
        probes.append(now[0])
        return check()

    app.store.check = counted_check
    assert get(health, "/live").status_int == 200 and probes == []
    for _ in range(5):  # probes from many load balancers within the second: one probe
        assert get(health, "/ready").json["status"] == "ok"
    assert probes == [100.0]
    now[0] += READY_SECONDS
    assert get(health, "/ready").status_int == 200 and probes == [100.0, 101.0]
    assert get(health, "").status_int == 200 and len(probes) == 3  # /_health: every call
    assert get(health, "/nonsense").status_int == 404


# -- metrics, in-process ------------------------------------------------------------------------


@BOTH
def test_metrics_count_statuses_hits_misses_bytes_and_generation(any_config):
    app = make_app(any_config)
    imageid = app.store.save_image(f.photo_jpeg(300, 200))
    miss = get(app, f"/100x100/{imageid}.jpeg")
    hits = [get(app, f"/100x100/{imageid}.jpeg") for _ in range(3)]
    assert [hit.body for hit in hits] == [miss.body] * 3
    not_modified = get(app, f"/100x100/{imageid}.jpeg", if_none_match=miss.etag)
    head = get(app, f"/100x100/{imageid}.jpeg", method="HEAD")
    assert get(app, "/100x100/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA01.jpeg").status_int == 404
    assert get(app, "/nonsense").status_int == 404
    assert get(app, "/_health").status_int == 200
    assert not_modified.status_int == 304 and head.status_int == 200

    response = get(app, "/_metrics")
    assert response.status_int == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    m = parse_metrics(response.text)
    assert m['huimages_requests_total{status="200"}'] == 6  # miss, 3 hits, HEAD, health
    assert m['huimages_requests_total{status="304"}'] == 1
    assert m['huimages_requests_total{status="404"}'] == 2
    assert m["huimages_cache_hits_total"] == 5  # 3 hits, the 304, the HEAD
    assert m["huimages_cache_misses_total"] == 2  # the first request, the unknown image
    # the miss and 3 hits send the variant; HEAD and 304 send nothing; health and 404s a little
    assert len(miss.body) * 4 < m["huimages_bytes_served_total"] < len(miss.body) * 4 + 2000
    assert m["huimages_generation_seconds_count"] == 1
    assert m[bucket("+Inf")] == 1 and m["huimages_generation_seconds_sum"] > 0
    counts = [m[bucket(repr(b))] for b in BUCKETS] + [m[bucket("+Inf")]]
    assert counts == sorted(counts)  # cumulative

    again = parse_metrics(get(app, "/_metrics").text)
    assert again['huimages_requests_total{status="200"}'] == 7  # the first scrape counted


@pytest.mark.parametrize("xsendfile", ["x-sendfile", "x-accel-redirect"])
def test_bytes_sent_by_the_webserver_are_counted(tmp_path, xsendfile):
    """With X-Sendfile the answer has no body, yet the webserver sends the file."""
    app = make_app(Config(data_dir=tmp_path / "data", xsendfile=xsendfile))
    imageid = app.store.save_image(f.photo_jpeg(300, 200))
    miss = get(app, f"/100x100/{imageid}.jpeg")  # generated, then handed to the webserver
    hit = get(app, f"/100x100/{imageid}.jpeg")  # the fast path
    assert miss.body == hit.body == b"" and miss.status_int == hit.status_int == 200
    assert get(app, f"/100x100/{imageid}.jpeg", method="HEAD").status_int == 200
    size = (app.config.cache_root / "100x100" / f"{imageid}.jpeg").stat().st_size
    m = parse_metrics(get(app, "/_metrics").text)
    assert m["huimages_bytes_served_total"] == 2 * size  # the HEAD sends nothing


def test_metrics_and_health_can_be_switched_off(tmp_path):
    app = make_app(Config(data_dir=tmp_path / "data", metrics=False, health=False))
    for path in ("/_metrics", "/_health"):
        assert get(app, path).status_int == 404  # not an image URL either
    assert not (tmp_path / "data" / "metrics").exists()


def test_two_apps_on_one_data_dir_add_up(tmp_path):
    """Two slot owners in one process behave like two workers: one total."""
    config = Config(data_dir=tmp_path / "data")
    first, second = make_app(config), make_app(config)
    for app in (first, second, second):
        assert get(app, "/_api/images").status_int == 404
    assert len(list((tmp_path / "data" / "metrics").glob("*.bin"))) == 2
    for app in (first, second):
        assert parse_metrics(get(app, "/_metrics").text)[
            'huimages_requests_total{status="404"}'] == 3


# -- metrics and access log on a real multi-worker server ---------------------------------------


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def three_workers(tmp_path) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path / "data", workers=3,
                        env={"HUIMAGES_ACCESS_LOG": "1", "HUIMAGES_LOG_FORMAT": "json"})
    server.start()
    yield server
    server.stop()


def test_metrics_are_node_totals_across_gunicorn_workers(three_workers):
    server = three_workers
    photo = server.data_dir.parent / "p.jpg"
    photo.write_bytes(f.photo_jpeg(400, 300, seed=21))
    imageid = server.cli("put", str(photo)).stdout.strip()
    urls = [f"{server.url}/{w}x{w}/{imageid}.jpeg" for w in range(20, 30)]
    # the 10 misses one after the other (two concurrent misses of one variant are two misses),
    # then 20 hits from 6 threads at once, which spreads them over the workers
    statuses = [fetch(url)[0] for url in urls]

    def worker(part: list[str]) -> None:
        statuses.extend(fetch(url)[0] for url in part)

    urls *= 2
    threads = [threading.Thread(target=worker, args=(urls[i::6],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 30

    slots = list((server.data_dir / "metrics").glob("*.bin"))
    assert 1 < len(slots) <= 3  # several workers counted, the master none

    previous = None
    for _ in range(12):  # each scrape lands on any worker: every one must see the node total
        status, body = fetch(f"{server.url}/_metrics")
        assert status == 200
        m = parse_metrics(body.decode())
        assert m["huimages_cache_misses_total"] == 10
        assert m["huimages_cache_hits_total"] == 20
        assert m["huimages_generation_seconds_count"] == 10
        ok = m['huimages_requests_total{status="200"}']
        if previous is not None:
            assert ok == previous + 1  # exactly the previous scrape, whichever worker had it
        previous = ok

    server.stop()  # flush and close the log
    events = [json.loads(line) for line in server.log.read_text().splitlines()
              if line.startswith("{")]
    access = [e for e in events if e["logger"] == "huimages_wsgi.access"]
    images = [e for e in access if e["path"].endswith(f"/{imageid}.jpeg")]
    assert len(images) == 30
    assert sorted(e["cache"] for e in images) == ["hit"] * 20 + ["miss"] * 10
    for event in images:
        assert event["method"] == "GET" and event["status"] == 200
        assert event["bytes"] > 0 and event["duration_ms"] >= 0
        assert event["level"] == "info" and event["ts"].endswith("Z")
    scrapes = [e for e in access if e["path"] == "/_metrics"]
    assert len(scrapes) == 12 and all(e["cache"] is None for e in scrapes)
    assert any(e["logger"].startswith("_granian") for e in events)  # the server's own lines too


# -- log formats ------------------------------------------------------------------------------


def _record(exc: bool = False, **fields) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom\nwith a second line")
        except RuntimeError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("huimages_wsgi", logging.ERROR, __file__, 1, "failed %s", ("x",),
                               exc_info)
    record.fields = fields
    return record


def test_json_lines_carry_fields_and_the_traceback_on_one_line():
    line = JsonFormatter().format(_record(exc=True, path="/a b", status=500))
    assert "\n" not in line
    event = json.loads(line)
    assert event["msg"] == "failed x" and event["level"] == "error"
    assert event["path"] == "/a b" and event["status"] == 500
    assert "RuntimeError: boom" in event["exc"]


def test_logfmt_lines_quote_only_what_needs_it():
    line = LogfmtFormatter().format(_record(exc=True, path="/a b", status=500, cache=None))
    assert "\n" not in line
    assert 'msg="failed x"' in line and 'path="/a b"' in line and " status=500" in line
    assert " cache= " in line and " level=error " in line
    assert 'exc="Traceback' in line and "\\n" in line


def test_readiness_probes_do_not_queue_behind_a_slow_probe(tmp_path):
    """While one probe waits for a silent backend, the others answer the last report."""
    from huimages_wsgi.web.health import READY_SECONDS, HealthApp

    app = make_app(Config(data_dir=tmp_path / "data"))
    now = [100.0]
    health = HealthApp(app.store, clock=lambda: now[0])
    assert get(health, "/ready").status_int == 200
    entered, release, check = threading.Event(), threading.Event(), app.store.check

    def silent_backend():
        entered.set()
        assert release.wait(10)
        return check()

    app.store.check = silent_backend
    now[0] += READY_SECONDS
    slow = threading.Thread(target=lambda: get(health, "/ready"))
    slow.start()
    assert entered.wait(10)
    answers = []
    other = threading.Thread(target=lambda: answers.append(get(health, "/ready")))
    other.start()
    other.join(5)  # blocked behind the slow probe, it would wait for release
    try:
        assert not other.is_alive() and answers[0].json["status"] == "ok"  # the last report
    finally:
        release.set()
        slow.join(10)
        other.join(10)
