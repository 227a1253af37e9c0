"""/_health, /_metrics and the structured logs: in-process on both backends, with a backend
really down, and on a multi-worker ``huimages serve``."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.exposition import choose_encoder
from prometheus_client.parser import text_string_to_metric_families
from webob import Request

from huimages_wsgi import Config, make_app
from huimages_wsgi.deploy.multiprocess import default_directory
from huimages_wsgi.web.health import READY_SECONDS, HealthApp
from huimages_wsgi.web.logs import JsonFormatter, LogfmtFormatter

from .. import imagefactory as f
from ..backends import backend_config
from ..conftest import BIN, LiveServer

BOTH = pytest.mark.parametrize("backend", ["embedded", "s3+couch"], indirect=True)
def get(app, path, **kwargs):
    return Request.blank(path, **kwargs).get_response(app)


LOCAL = {"REMOTE_ADDR": "127.0.0.1"}  # Request.blank's Host is localhost:80


def local_health(app) -> tuple[object, list[float]]:
    """``app``'s store's health endpoint on a clock the test moves (``now[0]``)."""
    now = [100.0]
    return HealthApp(app.store, clock=lambda: now[0]), now


#: Every family /_metrics shows (the follower's when one ran: test_cluster.py), by type.
FAMILIES = {
    "huimages_http_request_duration_seconds": "histogram",
    "huimages_http_response_bytes": "counter",
    "huimages_render_duration_seconds": "histogram",
    "huimages_render_wait_seconds": "histogram",
    "huimages_render_refusals": "counter",
    "huimages_render_queue_depth": "gauge",
    "huimages_renders_running": "gauge",
    "huimages_upload_duration_seconds": "histogram",
    "huimages_upload_size_bytes": "histogram",
    "huimages_backend_request_duration_seconds": "histogram",
    "huimages_backend_errors": "counter",
    "huimages_cache_filesystem_avail_bytes": "gauge",
    "huimages_cache_filesystem_size_bytes": "gauge",
}
#: What the last `huimages prune-cache` left, shown once one ran.
PRUNE_FAMILIES = {"huimages_cache_bytes", "huimages_cache_files", "huimages_cache_evicted_files",
                  "huimages_cache_evicted_bytes", "huimages_cache_last_prune_timestamp_seconds"}


def parse_metrics(text: str, every: bool = False) -> dict[str, float]:
    """Sample name with its labels (sorted) -> value, read by prometheus_client's own
    parser of the text format; the families shown must be documented ones (``every``:
    all of them; in multiprocess mode a family with labels shows once it has a sample)."""
    samples: dict[str, float] = {}
    types = {}
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_created"):  # one process only (not in multiprocess mode)
            continue
        types[family.name] = family.type
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    shown = {name: kind for name, kind in types.items()
             if not name.startswith("huimages_follower_") and name not in PRUNE_FAMILIES}
    assert shown == FAMILIES if every else shown.items() <= FAMILIES.items()
    return samples


def scrape(app) -> dict[str, float]:
    response = get(app, "/_metrics")
    assert response.status_int == 200
    assert response.headers["Content-Type"] == choose_encoder("")[1]  # the text format
    assert response.headers["Cache-Control"] == "no-store"
    return parse_metrics(response.text, every=True)


def grown(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What the samples grew by (metrics in one process are the process's, shared by
    every app a test makes, so tests count differences)."""
    return {key: value - before.get(key, 0.0) for key, value in after.items()
            if value != before.get(key, 0.0)}


def requests(route: str, status: str) -> str:
    return f'huimages_http_request_duration_seconds_count{{route="{route}",status="{status}"}}'


# -- health ----------------------------------------------------------------------------------


@BOTH
def test_health_is_ok_when_every_backend_answers(any_config):
    app = make_app(any_config)
    response = get(app, "/_health", environ=LOCAL)
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
    health, now = local_health(make_app(Config(data_dir=tmp_path / "data")))
    assert get(health, "", environ=LOCAL).status_int == 200
    originals = health.store.blobs.root
    originals.rmdir()  # the first check created it
    originals.write_text("")  # a file where the directory should be
    assert get(health, "", environ=LOCAL).status_int == 200  # the last probe, reused
    now[0] += READY_SECONDS
    response = get(health, "", environ=LOCAL)
    assert response.status_int == 503
    assert response.json["checks"]["blobs"]["ok"] is False
    assert "not writable" in response.json["checks"]["blobs"]["error"]
    assert response.json["checks"]["catalog"]["ok"] is True


HEALTH_TOKEN = "health-token-0123456789"


@pytest.mark.parametrize("environ, headers, detail", [
    (LOCAL, {}, True),  # on this machine, directly
    ({"REMOTE_ADDR": "192.0.2.7"}, {"Authorization": f"Bearer {HEALTH_TOKEN}"}, True),
    ({"REMOTE_ADDR": "192.0.2.7"}, {}, False),  # another machine
    (LOCAL, {"X-Forwarded-For": "192.0.2.7"}, False),  # through a proxy on this machine
    ({**LOCAL, "HTTP_HOST": "images.example.com"}, {}, False),
    ({"REMOTE_ADDR": "192.0.2.7"}, {"Authorization": "Bearer wrong-token-0123456789"}, False),
])
def test_health_shows_paths_and_errors_only_to_local_clients_and_token_holders(
        tmp_path, environ, headers, detail):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    app = make_app(Config(data_dir=tmp_path / "data", cache_dir=blocker / "cache",
                          upload_token=HEALTH_TOKEN))
    for path in ("/_health", "/_health/ready"):
        response = get(app, path, environ=dict(environ), headers=headers)
        assert response.status_int == 503
        report = response.json
        assert report["status"] == "degraded" and report["checks"]["cache"]["ok"] is False
        assert report["checks"]["catalog"]["ok"] is True
        if detail:
            assert str(blocker) in report["checks"]["cache"]["backend"]
            assert report["checks"]["cache"]["error"]
        else:
            assert report["checks"] == {"blobs": {"ok": True}, "catalog": {"ok": True},
                                        "cache": {"ok": False}}
            assert str(tmp_path) not in response.text


def test_metrics_show_no_paths(tmp_path):
    """/_metrics stays open (the webserver configurations restrict it): nothing of the
    machine's file system is in it, after hits, misses, errors and the health probe."""
    app = make_app(Config(data_dir=tmp_path / "data"))
    imageid = app.store.save_image(f.photo_jpeg(300, 200))
    for path in (f"/100x100/{imageid}.jpeg", f"/100x100/{imageid}.jpeg", "/_health",
                 "/o/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA01.jpeg", "/_api/images"):
        get(app, path, environ=LOCAL)
    get(app, f"/120x120/{imageid}.webp", environ=LOCAL)
    text = get(app, "/_metrics").text
    assert "huimages_http_request_duration_seconds_count" in text
    assert str(tmp_path) not in text and "/data" not in text and "/cache" not in text


@pytest.mark.parametrize("server_name, failing", [("own_s3", "blobs"), ("own_couch", "catalog")])
def test_health_is_503_while_a_backend_is_down(
    tmp_path, own_s3, own_couch, monkeypatch, request, server_name, failing
):
    for key, value in own_s3.env.items():
        monkeypatch.setenv(key, value)
    config = backend_config("s3+couch", tmp_path / "data", own_s3, own_couch,
                            backend_timeout=1.5)
    health, now = local_health(make_app(config))
    assert get(health, "", environ=LOCAL).status_int == 200
    server = request.getfixturevalue(server_name)
    server.stop()
    try:
        now[0] += READY_SECONDS
        response = get(health, "", environ=LOCAL)
        assert response.status_int == 503
        report = response.json
        assert report["status"] == "degraded"
        assert report["checks"][failing]["ok"] is False and report["checks"][failing]["error"]
        healthy = {"blobs", "catalog", "cache"} - {failing}
        assert all(report["checks"][name]["ok"] for name in healthy)
    finally:
        server.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now[0] += READY_SECONDS
        if get(health, "").status_int == 200:
            break
        time.sleep(0.2)
    assert get(health, "").json["status"] == "ok"


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
    for _ in range(5):  # /_health shares the probe: a flood of calls is one probe a second
        assert get(health, "").status_int == 200 and len(probes) == 2
    now[0] += READY_SECONDS
    assert get(health, "").status_int == 200 and len(probes) == 3
    assert get(health, "/nonsense").status_int == 404


# -- metrics, in-process ------------------------------------------------------------------------


@BOTH
def test_metrics_count_routes_statuses_bytes_renders_uploads_and_backend_calls(
        any_config, backend):
    app = make_app(any_config)
    before = scrape(app)
    photo = f.photo_jpeg(300, 200)
    imageid = app.store.save_image(photo)
    miss = get(app, f"/100x100/{imageid}.jpeg")
    hits = [get(app, f"/100x100/{imageid}.jpeg") for _ in range(3)]
    assert [hit.body for hit in hits] == [miss.body] * 3
    not_modified = get(app, f"/100x100/{imageid}.jpeg",
                       headers={"If-Modified-Since": miss.headers["Last-Modified"]})
    head = get(app, f"/100x100/{imageid}.jpeg", method="HEAD")
    original = get(app, f"/o/{imageid}.jpeg")
    assert get(app, "/100x100/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA01.jpeg").status_int == 404
    assert get(app, "/o/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA01.jpeg").status_int == 404
    assert get(app, "/o/nonsense.jpeg").status_int == 400
    assert get(app, "/nonsense").status_int == 404
    assert get(app, "/_health").status_int == 200
    assert not_modified.status_int == 304 and head.status_int == 200
    assert original.body == photo

    m = grown(before, scrape(app))
    assert m[requests("miss", "2xx")] == 1
    assert m[requests("hit", "2xx")] == 4  # 3 hits and the HEAD
    assert m[requests("hit", "3xx")] == 1
    assert m[requests("original", "2xx")] == 1
    assert m[requests("miss", "4xx")] == 1  # the unknown image
    assert m[requests("original", "4xx")] == 1  # looked for: o/ of an unknown image
    assert m[requests("other", "4xx")] == 2  # /nonsense, and o/ of no image ID at all
    assert m[requests("health", "2xx")] == 1
    assert m['huimages_http_response_bytes_total{route="hit"}'] == 3 * len(miss.body)
    # the original and the short 404 of the unknown one
    assert len(photo) < m['huimages_http_response_bytes_total{route="original"}'] < len(photo) + 200
    renders = {key: value for key, value in m.items()
               if key.startswith("huimages_render_duration_seconds_count")}
    assert sum(renders.values()) == 1 and all('format="jpeg"' in key for key in renders)
    # the upload, the miss and o/ each took a slot (uploads decode under the admission)
    assert m["huimages_render_wait_seconds_count"] == 3
    assert m["huimages_upload_duration_seconds_count"] == 1
    assert m["huimages_upload_size_bytes_sum"] == len(photo)
    calls = {key.split("{")[1] for key in m
             if key.startswith("huimages_backend_request_duration_seconds_count")}
    if backend == "embedded":
        assert {'backend="sqlite",operation="get"}', 'backend="sqlite",operation="update"}',
                'backend="disk",operation="put"}', 'backend="disk",operation="open"}'} <= calls
    else:
        assert {'backend="couchdb",operation="get"}', 'backend="couchdb",operation="update"}',
                'backend="s3",operation="put"}', 'backend="s3",operation="open"}'} <= calls
    assert not any(key.startswith("huimages_backend_errors_total") for key in m)
    # histograms are cumulative, and a scrape is counted by the next one
    buckets = sorted((float(key.split('le="')[1].split('"')[0]), value) for key, value in m.items()
                     if key.startswith("huimages_http_request_duration_seconds_bucket")
                     and 'route="hit",status="2xx"' in key)
    assert [value for _, value in buckets] == sorted(value for _, value in buckets)
    assert m[requests("metrics", "2xx")] == 1  # the one that took `before`
    assert grown(before, scrape(app))[requests("metrics", "2xx")] == 2


def test_backend_errors_are_counted_by_backend_and_operation(tmp_path):
    """A backend call that fails is an error of that backend; a missing image is not."""
    app = make_app(Config(data_dir=tmp_path / "data"))
    imageid = app.store.save_image(f.photo_jpeg(120, 80))
    before = scrape(app)
    blob = app.store.blobs.path(imageid)
    blob.rename(blob.with_suffix(".away"))
    blob.mkdir()  # opening it fails (even as root): a disk's trouble, not a missing image
    assert get(app, f"/90x90/{imageid}.jpeg").status_int == 503
    assert get(app, "/90x90/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA01.jpeg").status_int == 404
    m = grown(before, scrape(app))
    errors = {key: value for key, value in m.items() if key.startswith("huimages_backend_errors")}
    assert errors == {'huimages_backend_errors_total{backend="disk",operation="open"}': 1.0}
    assert m[requests("miss", "5xx")] == 1


def test_bytes_sent_by_the_webserver_are_counted(tmp_path):
    """With X-Sendfile the answer has no body, yet the webserver sends the file."""
    for xsendfile in ("x-sendfile", "x-accel-redirect"):
        app = make_app(Config(data_dir=tmp_path / xsendfile, xsendfile=xsendfile))
        imageid = app.store.save_image(f.photo_jpeg(300, 200))
        before = scrape(app)
        miss = get(app, f"/100x100/{imageid}.jpeg")  # generated, then handed to the webserver
        hit = get(app, f"/100x100/{imageid}.jpeg")  # the fast path
        assert miss.body == hit.body == b"" and miss.status_int == hit.status_int == 200
        assert get(app, f"/100x100/{imageid}.jpeg", method="HEAD").status_int == 200
        size = (app.config.cache_root / "100x100" / f"{imageid}.jpeg").stat().st_size
        m = grown(before, scrape(app))
        assert m['huimages_http_response_bytes_total{route="miss"}'] == size
        assert m['huimages_http_response_bytes_total{route="hit"}'] == size  # HEAD: nothing


def test_metrics_speak_openmetrics_to_a_scraper_that_asks(tmp_path):
    app = make_app(Config(data_dir=tmp_path / "data"))
    answer = get(app, "/_metrics", accept="application/openmetrics-text; version=1.0.0")
    assert answer.content_type == "application/openmetrics-text"
    assert "# TYPE huimages_render_refusals counter" in answer.text
    assert answer.text.endswith("# EOF\n")


def test_metrics_and_health_can_be_switched_off(tmp_path):
    app = make_app(Config(data_dir=tmp_path / "data", metrics=False, health=False))
    for path in ("/_metrics", "/_health"):
        assert get(app, path).status_int == 404  # not an image URL either
    assert not (tmp_path / "data" / "metrics").exists()


def test_a_prune_shows_the_cache_size_and_adds_up_evictions(tmp_path):
    config = Config(data_dir=tmp_path / "data")
    app = make_app(config)
    imageid = app.store.save_image(f.photo_jpeg(300, 200))
    sizes = []
    for width in (50, 60, 70):
        sizes.append(get(app, f"/{width}x{width}/{imageid}.jpeg").content_length)
        time.sleep(0.01)  # made in this order
    assert "huimages_cache_bytes" not in scrape(app)  # no prune yet
    env = dict(os.environ)
    config.export(env)
    for again in (50, 60):  # each prune drops the least recently made: 50, then 60
        subprocess.run([str(BIN / "huimages"), "prune-cache", "--max-bytes",
                        str(sizes[1] + sizes[2])], env=env, check=True, capture_output=True)
        time.sleep(0.01)
        assert get(app, f"/{again}x{again}/{imageid}.jpeg").status_int == 200
    m = scrape(app)
    assert m["huimages_cache_files"] == 2  # 70 and 50, before 60 was made again
    assert m["huimages_cache_bytes"] == sizes[0] + sizes[2]
    assert m["huimages_cache_evicted_files_total"] == 2  # one each time, added up
    assert m["huimages_cache_evicted_bytes_total"] == sizes[0] + sizes[1]
    assert m["huimages_cache_last_prune_timestamp_seconds"] > time.time() - 60
    free, size = (m[f"huimages_cache_filesystem_{k}_bytes"] for k in ("avail", "size"))
    assert 0 < free < size


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


def test_metrics_are_node_totals_across_the_workers_of_huimages_serve(three_workers):
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

    directory = default_directory(Config(data_dir=server.data_dir))
    assert directory.parent == Path("/dev/shm")  # not on the cache's disk
    files = list(directory.glob("*.db"))  # prometheus_client's
    assert len({path.stem.rpartition("_")[2] for path in files}) > 1  # several workers counted

    previous = None
    for _ in range(12):  # each scrape lands on any worker: every one must see the node total
        status, body = fetch(f"{server.url}/_metrics")
        assert status == 200
        m = parse_metrics(body.decode())
        assert m[requests("miss", "2xx")] == 10
        assert m[requests("hit", "2xx")] == 20
        renders = [value for key, value in m.items()
                   if key.startswith("huimages_render_duration_seconds_count")]
        assert sum(renders) == 10
        ok = m.get(requests("metrics", "2xx"), 0)
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
