"""A real Prometheus scraping two ``huimages serve`` nodes with contrib/prometheus/:
after a short load every query of contrib/grafana/huimages.json and every alert
expression returns data, and ``promtool`` accepts the configuration and the rules."""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from .. import imagefactory as f
from ..conftest import LiveServer
from ..services import REPO_ROOT, PrometheusServer, find_executable

pytestmark = pytest.mark.services

CONTRIB = REPO_ROOT / "contrib"
TOKEN = "prometheus-test-token-0123456789abcdef"
#: What Grafana puts for $__rate_interval at a 1 s scrape interval, roughly.
RATE_INTERVAL = "30s"


def promtool(*args: str) -> str:
    done = subprocess.run([find_executable(".services/bin/promtool", "promtool"), *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promtool_accepts_the_configuration_and_the_rules():
    out = promtool("check", "config", str(CONTRIB / "prometheus" / "prometheus.yml"))
    assert "SUCCESS" in out and "1 rule files found" in out
    assert "SUCCESS: 7 rules found" in promtool(
        "check", "rules", str(CONTRIB / "prometheus" / "huimages.rules.yml"))


def fetch(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LiveServer]]:
    base = tmp_path_factory.mktemp("nodes")
    servers = [LiveServer(base / f"node-{n}", env={"HUIMAGES_UPLOAD_TOKEN": TOKEN,
                                                   "HUIMAGES_BROWSE": "1"})
               for n in (1, 2)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def prometheus(nodes: list[LiveServer], tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[PrometheusServer]:
    """contrib/prometheus/ as shipped, with the two nodes as targets and a 1 s interval."""
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"))
    server.dir.mkdir(parents=True, exist_ok=True)
    config = (CONTRIB / "prometheus" / "prometheus.yml").read_text()
    config = re.sub(r"(interval): 15s", r"\1: 1s", config)
    targets = "".join(f"\n          - 127.0.0.1:{node.port}" for node in nodes)
    config = re.sub(r"(- targets:)(\n +- node-\d\.example\.com:8080)+", r"\1" + targets, config)
    assert config.count("127.0.0.1:") == 2
    (server.dir / "prometheus.yml").write_text(config)
    (server.dir / "huimages.rules.yml").write_text(
        (CONTRIB / "prometheus" / "huimages.rules.yml").read_text())
    server.start()
    yield server
    server.stop()


def load(node: LiveServer, seed: int) -> None:
    """What a node does in a day, in seconds: uploads through the API, misses, hits,
    originals, the browse page, a 404, probes; and a cache prune."""
    photos = [f.photo_jpeg(640, 480, seed=seed + n) for n in range(3)]
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/jpeg"}
    ids = []
    for photo in photos:
        request = urllib.request.Request(f"{node.url}/_api/images", data=photo, headers=auth)
        with urllib.request.urlopen(request, timeout=60) as response:
            ids.append(json.load(response)["id"])
    statuses = []
    for imageid in ids:
        for size in ("100x100", "200x200", "320x240!"):
            for _ in range(3):  # a miss, then hits
                statuses.append(fetch(f"{node.url}/{size}/{imageid}.jpeg"))
        statuses.append(fetch(f"{node.url}/150x150/{imageid}.webp"))
        statuses.append(fetch(f"{node.url}/o/{imageid}.jpeg"))
    statuses += [fetch(f"{node.url}/_browse/", headers={"Authorization": f"Bearer {TOKEN}"}),
                 fetch(f"{node.url}/_health/ready")]
    assert set(statuses) == {200}, statuses
    assert fetch(f"{node.url}/100x100/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA01.jpeg") == 404
    node.cli("prune-cache", "--max-bytes", "1G")


def dashboard_queries() -> list[str]:
    dashboard = json.loads((CONTRIB / "grafana" / "huimages.json").read_text())
    return [target["expr"].replace("$__rate_interval", RATE_INTERVAL)
            for panel in dashboard["panels"] for target in panel["targets"]]


def with_data(result: list[dict]) -> bool:
    return any(not math.isnan(float(series["value"][1])) for series in result)


def wait_for_scrapes(prometheus: PrometheusServer, timeout: float = 30.0) -> None:
    """Until Prometheus has scraped both nodes (it starts scraping a few seconds after
    it is ready)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        up = prometheus.query('sum(up{job="huimages"})')
        if up and float(up[0]["value"][1]) == 2:
            return
        time.sleep(0.5)
    pytest.fail(f"Prometheus does not scrape both nodes: {prometheus.query('up')}")


def test_every_dashboard_query_and_alert_expression_returns_data(nodes, prometheus):
    wait_for_scrapes(prometheus)
    for round_ in range(2):  # two loads some scrapes apart: rates need samples that differ
        for number, node in enumerate(nodes):
            load(node, seed=100 * number + 10 * round_)
        time.sleep(2.5)

    queries = dashboard_queries()
    assert len(queries) >= 16
    empty = [expr for expr in queries if not with_data(prometheus.query(expr))]
    assert not empty, f"dashboard queries without data: {empty}"
    per_node = prometheus.query(
        'sum by (instance) (huimages_http_request_duration_seconds_count{route="hit"})')
    assert sorted(float(s["value"][1]) for s in per_node) == [36.0, 36.0]  # 2 rounds×3×3×2

    rules = prometheus.rules()
    assert len(rules) == 7 and all(rule["health"] == "ok" for rule in rules), rules
    for rule in rules:
        # `A > x` -> `A > bool x`: a value for every series of A, firing or not
        expr = re.sub(r"\s([<>]=?|==)\s+(?=[0-9.]+\s*$)", r" \1 bool ", rule["query"])
        assert " bool " in expr, rule["query"]
        result = prometheus.query(expr)
        assert with_data(result), f"{rule['name']}: no data for {expr}"
        assert all(float(s["value"][1]) == 0 for s in result), f"{rule['name']} fires: {result}"
