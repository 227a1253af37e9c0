"""``GET /_metrics``: the node's metrics, kept and exposed by ``prometheus_client``.

    app = make_app(config)              # mounts MetricsApp at /_metrics
    curl http://127.0.0.1:8080/_metrics

``make_app`` builds one :class:`Metrics` per application: it records every
request (through ``instrumented.Instrumented``), render admission, and what
the lower layers report through ``core/observe.py`` (backend calls, renders,
uploads), and answers a scrape with those plus what this node's other
processes left on disk (the follower's state, the last cache prune).

A node of several worker processes counts in ``prometheus_client``'s
multiprocess mode, set up by its server's main process
(``deploy/multiprocess.py``): every process writes to files in
``PROMETHEUS_MULTIPROC_DIR`` and a scrape sums them. Counters of a worker that
ended stay in the sums; its gauges leave them. Without that variable (one
process, tests) the metrics live in this process.

``prometheus_client`` chooses its mode when it is first imported, so only
``make_app`` (after the main process prepared the directory) and ``huimages
prune-cache`` (no multiprocess files) import this module.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    write_to_textfile,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.parser import text_string_to_metric_families
from webob import Request, Response

from ..core import observe
from ..core.config import Config
from ..core.forks import forget_after_fork
from ..node.status import follower_status
from .responses import only_read_methods

log = logging.getLogger("huimages_wsgi")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The last ``huimages prune-cache`` leaves its figures here (``record_prune``).
PRUNE_FILE = "cache.prom"

#: From a cached file sent by the kernel to a whole-original decode of a large photo.
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0, 30.0)
RENDER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BACKEND_BUCKETS = REQUEST_BUCKETS[:-1]  # up to 10 s
UPLOAD_SIZE_BUCKETS = tuple(2.0**n for n in (14, 16, 18, 20, 21, 22, 23, 24, 25, 26))


# -- a worker's start: the gauges of workers that died ------------------------------


def _forget_dead_processes(directory: str) -> None:
    """A worker that died without its server telling (granian has no hook for it)
    leaves gauge files: the next worker to start removes those of dead processes."""
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = path.stem.rpartition("_")[2]
        if pid.isdigit() and not _alive(int(pid)):
            try:
                multiprocess.mark_process_dead(int(pid), directory)
            except OSError as exc:  # another process removed them first
                log.debug("gauges of process %s: %s", pid, exc)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the instruments: one set per process -----------------------------------------------


class Instruments(NamedTuple):
    requests: Histogram
    response_bytes: Counter
    renders: Histogram
    admission_wait: Histogram
    refusals: Counter
    queued: Gauge
    running: Gauge
    uploads: Histogram
    upload_bytes: Histogram
    backend_calls: Histogram
    backend_errors: Counter


_made = threading.Lock()


def instruments() -> Instruments:
    """This process's instruments, made once, on first use (in a worker, never in the
    main process that forks it): in multiprocess mode they belong to no registry
    (the scrape reads every process's files), else to this module's registry."""
    made = _instruments.cache_info().currsize
    if not made:
        with _made:  # many threads may take the first request at once: one makes them
            return _instruments()
    return _instruments()


@cache
def _instruments() -> Instruments:
    directory = os.environ.get(MULTIPROC_ENV)
    registry = None if directory else _local_registry()
    if directory:
        _forget_dead_processes(directory)

    def histogram(name: str, text: str, labels: tuple[str, ...], buckets: tuple) -> Histogram:
        return Histogram(name, text, labels, buckets=buckets, registry=registry)

    def counter(name: str, text: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(name, text, labels, registry=registry)

    def gauge(name: str, text: str) -> Gauge:
        return Gauge(name, text, registry=registry, multiprocess_mode="livesum")

    return Instruments(
        requests=histogram(
            "huimages_http_request_duration_seconds",
            "Time to answer a request (not to send it), by route and status class.",
            ("route", "status"), REQUEST_BUCKETS),
        response_bytes=counter(
            "huimages_http_response_bytes", "Response body bytes sent, by route.", ("route",)),
        renders=histogram(
            "huimages_render_duration_seconds",
            "Time to render a variant, by what it was made from and its format.",
            ("source", "format"), RENDER_BUCKETS),
        admission_wait=histogram(
            "huimages_render_wait_seconds",
            "Time an admitted render waited for a render slot (often none).",
            (), WAIT_BUCKETS),
        refusals=counter(
            "huimages_render_refusals",
            "Misses answered 503 because no render slot would come free in time."),
        queued=gauge("huimages_render_queue_depth", "Misses waiting for a render slot now."),
        running=gauge("huimages_renders_running", "Renders holding a render slot now."),
        uploads=histogram(
            "huimages_upload_duration_seconds",
            "Time to store an upload (decode, previews, blob store, catalog).",
            (), RENDER_BUCKETS),
        upload_bytes=histogram(
            "huimages_upload_size_bytes", "Size of stored uploads.", (), UPLOAD_SIZE_BUCKETS),
        backend_calls=histogram(
            "huimages_backend_request_duration_seconds",
            "Time of a call to a storage backend, by backend and operation.",
            ("backend", "operation"), BACKEND_BUCKETS),
        backend_errors=counter(
            "huimages_backend_errors",
            "Calls to a storage backend that failed, by backend and operation.",
            ("backend", "operation")),
    )


@cache
def _local_registry() -> CollectorRegistry:
    return CollectorRegistry()


# -- recording ------------------------------------------------------------------------


class Metrics:
    """What one application records and answers a scrape with."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.show_follower = bool(config.follow)
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}
        observe.install(self)  # backend calls, renders and uploads of this process
        forget_after_fork(self)

    def after_fork(self) -> None:
        """In a forked child: instruments of its own, made on its first use (so it also
        takes the gauges of dead workers out of the sums)."""
        global _made
        _made = threading.Lock()  # the parent's may have been held by another thread
        _instruments.cache_clear()
        _local_registry.cache_clear()
        self._children = {}

    def request(self, route: str, status: int, seconds: float, nbytes: int) -> None:
        key = (route, status // 100)
        meters = self._children.get(key)
        if meters is None:  # once per route and status class: labels() takes a lock
            instrument = instruments()
            meters = (instrument.requests.labels(route, f"{status // 100}xx"),
                      instrument.response_bytes.labels(route))
            self._children[key] = meters
        meters[0].observe(seconds)
        if nbytes:
            meters[1].inc(nbytes)

    def admission(self, kind: str, value: float) -> None:
        """An event of render admission (``admission.Observer``)."""
        meters = instruments()
        if kind == "queued":
            meters.queued.inc(value)
        elif kind == "running":
            meters.running.inc(value)
        elif kind == "waited":
            meters.admission_wait.observe(value)
        elif kind == "refused":
            meters.refusals.inc(value)

    def backend_call(self, backend: str, operation: str, seconds: float, failed: bool) -> None:
        meters = instruments()
        meters.backend_calls.labels(backend, operation).observe(seconds)
        if failed:
            meters.backend_errors.labels(backend, operation).inc()

    def render(self, source: str, fmt: str, seconds: float) -> None:
        instruments().renders.labels(source, fmt).observe(seconds)

    def upload(self, seconds: float, nbytes: int) -> None:
        meters = instruments()
        meters.uploads.observe(seconds)
        meters.upload_bytes.observe(nbytes)

    # -- a scrape ---------------------------------------------------------------------

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """Every worker's metrics and the node's, in the format the scraper accepts
        (Prometheus text, or OpenMetrics), with its content type."""
        registry = CollectorRegistry()
        directory = os.environ.get(MULTIPROC_ENV)
        if directory:
            multiprocess.MultiProcessCollector(registry, path=directory)
        else:
            for meter in instruments():
                registry.register(meter)
        registry.register(NodeCollector(self.config, self.show_follower))
        encode, content_type = choose_encoder(accept)
        return encode(registry), content_type


class NodeCollector:
    """What this node's other processes left on disk, read at each scrape: the
    cache filesystem, the last prune, the change-feed follower."""

    def __init__(self, config: Config, show_follower: bool) -> None:
        self.config, self.show_follower = config, show_follower

    def collect(self) -> Iterator[Metric]:
        yield from self.cache_filesystem()
        yield from self.last_prune()
        if self.show_follower:
            yield from self.follower()

    def cache_filesystem(self) -> Iterator[Metric]:
        path = self.config.cache_root
        while not path.exists() and path.parent != path:  # not made yet: where it will be
            path = path.parent
        try:
            fs = os.statvfs(path)
        except OSError:
            return
        yield GaugeMetricFamily(
            "huimages_cache_filesystem_avail_bytes",
            "Bytes the server may still write on the cache's filesystem.",
            value=fs.f_bavail * fs.f_frsize)
        yield GaugeMetricFamily(
            "huimages_cache_filesystem_size_bytes", "Size of the cache's filesystem.",
            value=fs.f_blocks * fs.f_frsize)

    def last_prune(self) -> Iterator[Metric]:
        try:
            text = prune_file(self.config).read_text()
        except OSError:
            return
        try:
            yield from list(text_string_to_metric_families(text))
        except ValueError as exc:  # a file cut short: the next prune writes it anew
            log.warning("cannot read %s: %s", prune_file(self.config), exc)

    def follower(self) -> Iterator[Metric]:
        status = follower_status(self.config)
        if status is None:
            return
        for name, key, text in (
            ("follower_last_seq", "last_seq_number",
             "Sequence of the last catalog change handled."),
            ("follower_lag_seconds", "lag_seconds",
             "Seconds since the follower was last known to have applied every change."),
            ("follower_feed_silence_seconds", "seconds_since_feed",
             "Seconds since the change feed last sent a change or a heartbeat."),
            ("follower_shared_purges_pending", "shared_purges_pending",
             "Purges owed to the shared caches in front (HUIMAGES_PURGE)."),
        ):
            if status[key] is not None:
                yield GaugeMetricFamily(f"huimages_{name}", text, value=status[key])
        yield GaugeMetricFamily("huimages_follower_stuck",
                                "1 when the follower is stuck (see /_health).",
                                value=int(status["stuck"]))
        for name, key, text in (
            ("follower_purged_files", "purged_total", "Cached files the follower removed."),
            ("follower_changes", "changes_total", "Catalog changes the follower read."),
            ("follower_reconciles", "reconciles_total", "Full reconciles of the cache."),
            ("follower_errors", "errors_total", "Failures the follower retried."),
            ("follower_restarts", "restarts_total",
             "Times the follower process was started again."),
            ("follower_shared_purges", "shared_purges_total",
             "Purges the shared caches in front acknowledged."),
            ("follower_shared_purge_failures", "shared_purge_failures_total",
             "Purges a shared cache refused or did not answer (each is asked again)."),
        ):
            yield CounterMetricFamily(f"huimages_{name}", text, value=int(status[key] or 0))


# -- the last prune, left by `huimages prune-cache` ---------------------------------


def prune_file(config: Config) -> Path:
    return config.data_dir / "metrics" / PRUNE_FILE


def record_prune(config: Config, cache_bytes: int, cache_files: int,
                 evicted_files: int, evicted_bytes: int, now: float | None = None) -> None:
    """After a prune: the cache's size, and evictions added to the earlier prunes'
    (``write_to_textfile`` replaces the file atomically)."""
    path = prune_file(config)
    before = {"files": 0.0, "bytes": 0.0}
    try:
        for family in text_string_to_metric_families(path.read_text()):
            for sample in family.samples:
                if sample.name == "huimages_cache_evicted_files_total":
                    before["files"] = sample.value
                elif sample.name == "huimages_cache_evicted_bytes_total":
                    before["bytes"] = sample.value
    except (OSError, ValueError):
        pass
    families = [
        GaugeMetricFamily("huimages_cache_bytes",
                          "Bytes of variants in the cache at the last prune.", value=cache_bytes),
        GaugeMetricFamily("huimages_cache_files", "Variants in the cache at the last prune.",
                          value=cache_files),
        GaugeMetricFamily("huimages_cache_last_prune_timestamp_seconds",
                          "When the cache was last pruned.",
                          value=time.time() if now is None else now),
        CounterMetricFamily("huimages_cache_evicted_files", "Variants pruned from the cache.",
                            value=before["files"] + evicted_files),
        CounterMetricFamily("huimages_cache_evicted_bytes", "Bytes pruned from the cache.",
                            value=before["bytes"] + evicted_bytes),
    ]
    registry = CollectorRegistry()
    registry.register(_Families(families))  # plain values: no multiprocess files
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


# -- the endpoint ---------------------------------------------------------------------


class MetricsApp:
    """``GET /_metrics``: the node's metrics for Prometheus to scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        response = only_read_methods(request.method)
        if response is None:
            body, content_type = self.metrics.exposition(environ.get("HTTP_ACCEPT", ""))
            response = Response(body=body)
            response.headers["Content-Type"] = content_type
            response.cache_control = "no-store"
        return response(environ, start_response)
