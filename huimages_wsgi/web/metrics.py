"""The node's counters (``/_metrics``) and the instrumentation that feeds them and the access log.

``make_app`` mounts :class:`MetricsApp` at ``/_metrics`` and wraps the whole
application in :class:`Instrumented`, which counts and logs every request.
Host applications that use ``ImageMiddleware`` alone get none of this and
pay nothing for it.

Counters are kept per node, summed over all worker processes (see
:class:`Metrics`), in the Prometheus text format, with no dependency.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from webob import Request, Response

from ..core.config import Config
from ..core.forks import forget_after_fork
from ..node.status import follower_metrics
from ..store.imagestore import ImageStore
from .environ_keys import CACHE_KEY, ROUTE_KEY, SENDFILE_BYTES_KEY
from .logs import ACCESS_LOGGER
from .responses import only_read_methods

log = logging.getLogger("huimages_wsgi")
access_log = logging.getLogger(ACCESS_LOGGER)

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Slot layout, one float64 each (exact for counts up to 2**53). Changing it
# means bumping LAYOUT, which names the files, so old slots are never misread.
LAYOUT = 2
_STATUS_SLOTS = 600  # index = HTTP status code
_HITS, _MISSES, _BYTES, _GEN_SUM, _GEN_COUNT = range(_STATUS_SLOTS, _STATUS_SLOTS + 5)
_BUCKET0 = _GEN_COUNT + 1  # one per bucket, plus +Inf; not cumulative on disk
# render admission (admission.py): two gauges of this process, then three counters
_ADMISSION0 = _BUCKET0 + len(BUCKETS) + 1
_ADMISSION = {
    kind: _ADMISSION0 + offset
    for offset, kind in enumerate(("queued", "running", "waits", "waited", "refused"))
}
_GAUGES = (_ADMISSION["queued"], _ADMISSION["running"])
_SLOTS = _ADMISSION0 + len(_ADMISSION)
_SLOT_BYTES = _SLOTS * 8
_MAX_PROCESSES = 4096

class Metrics:
    """Node-wide counters, correct under gunicorn with any number of workers.

    Each worker is a process and a scrape reaches just one of them, so
    per-process counters would make the totals jump between scrapes. Instead
    each process owns one small slot file in ``directory`` (memory-mapped and
    held by an ``flock`` for the process's lifetime), adds to it without any
    cross-process locking, and a scrape sums all slot files. A worker that
    exits leaves its slot behind; the next process to start adopts the first
    free slot and counts on from its totals, so sums never go backwards and
    the number of files stays at the most processes that ever ran at once.
    Totals survive restarts (Prometheus handles either). A slot is taken on
    the first request, never in the gunicorn master, and a forked child drops
    its parent's slot and takes its own.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()  # threaded servers: += on the mmap is not atomic
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        self._view: memoryview | None = None
        self._broken = False
        self.follower_config: Config | None = None  # set: also show the node's follower
        forget_after_fork(self)

    # -- writing: one process, one slot ------------------------------------------------

    def observe(self, status: int, nbytes: int, cache: str | None, seconds: float) -> None:
        """Count one finished request; never raises (a full disk must not fail requests)."""
        with self._lock:
            view = self._view if self._view is not None else self._open_slot()
            if view is None:
                return
            view[status if 0 <= status < _STATUS_SLOTS else 0] += 1
            view[_BYTES] += nbytes
            if cache == "hit":
                view[_HITS] += 1
            elif cache == "miss":
                view[_MISSES] += 1
                if status == 200:
                    view[_GEN_SUM] += seconds
                    view[_GEN_COUNT] += 1
                    view[_BUCKET0 + _bucket(seconds)] += 1

    def admission(self, kind: str, value: float) -> None:
        """An event of render admission (``admission.Observer``); never raises."""
        with self._lock:
            view = self._view if self._view is not None else self._open_slot()
            if view is None:
                return
            view[_ADMISSION[kind]] += value
            if kind == "waited":
                view[_ADMISSION["waits"]] += 1

    def _open_slot(self) -> memoryview | None:
        if self._broken:
            return None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for index in range(_MAX_PROCESSES):
                fd = os.open(self._slot_path(index), os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                if os.fstat(fd).st_size != _SLOT_BYTES:
                    os.ftruncate(fd, _SLOT_BYTES)
                self._fd, self._map = fd, mmap.mmap(fd, _SLOT_BYTES)
                self._view = memoryview(self._map).cast("d")
                for index in _GAUGES:  # a dead process's queue is no longer there
                    self._view[index] = 0
                return self._view
            raise OSError(f"all {_MAX_PROCESSES} metric slots are taken")
        except OSError as exc:
            self._broken = True
            log.error("metrics disabled: cannot use %s: %s", self.directory, exc)
            return None

    def _slot_path(self, index: int) -> Path:
        return self.directory / f"v{LAYOUT}-slot-{index:04d}.bin"

    def after_fork(self) -> None:
        """In a forked child: let go of the parent's slot without releasing its lock."""
        self._lock = threading.Lock()
        if self._view is not None:
            self._view.release()
            assert self._map is not None and self._fd is not None
            self._map.close()
            os.close(self._fd)  # the parent still holds the lock through its own descriptor
        self._fd = self._map = self._view = None

    def close(self) -> None:
        with self._lock:
            if self._view is not None:
                self._view.release()
                assert self._map is not None and self._fd is not None
                self._map.close()
                os.close(self._fd)  # releases the flock: the slot is free for the next process
            self._fd = self._map = self._view = None

    # -- reading: the sum over every slot -------------------------------------------

    def totals(self) -> array:
        total = array("d", bytes(_SLOT_BYTES))
        for path in sorted(self.directory.glob(f"v{LAYOUT}-slot-*.bin")):
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if len(data) != _SLOT_BYTES:
                continue
            slot = array("d", data)
            for index, value in enumerate(slot):
                if value:
                    total[index] += value
        return total

    def render(self) -> str:
        """The Prometheus text exposition format, version 0.0.4."""
        t = self.totals()
        lines = [
            "# HELP huimages_requests_total HTTP requests answered, by status code.",
            "# TYPE huimages_requests_total counter",
        ]
        lines += [
            f'huimages_requests_total{{status="{code}"}} {_number(t[code])}'
            for code in range(100, _STATUS_SLOTS)
            if t[code]
        ]
        for name, index, text in (
            ("cache_hits", _HITS, "Image requests answered from the cache."),
            ("cache_misses", _MISSES, "Image requests not found in the cache."),
            ("bytes_served", _BYTES, "Response body bytes sent (Content-Length)."),
        ):
            lines += [
                f"# HELP huimages_{name}_total {text}",
                f"# TYPE huimages_{name}_total counter",
                f"huimages_{name}_total {_number(t[index])}",
            ]
        lines += [
            "# HELP huimages_generation_seconds Time to answer a cache miss with a new variant.",
            "# TYPE huimages_generation_seconds histogram",
        ]
        cumulative = 0.0
        for offset, bound in enumerate((*BUCKETS, None)):
            cumulative += t[_BUCKET0 + offset]
            le = "+Inf" if bound is None else repr(bound)
            lines.append(f'huimages_generation_seconds_bucket{{le="{le}"}} {_number(cumulative)}')
        lines += [
            f"huimages_generation_seconds_sum {_number(t[_GEN_SUM])}",
            f"huimages_generation_seconds_count {_number(t[_GEN_COUNT])}",
        ]
        for name, kind, kind_text, text in (
            ("render_queue_depth", "queued", "gauge", "Misses waiting for a render slot now."),
            ("renders_running", "running", "gauge", "Renders holding a slot now."),
            ("render_waits_total", "waits", "counter",
             "Renders admitted (each counted with its wait, often none)."),
            ("render_wait_seconds_total", "waited", "counter", "Time renders waited for a slot."),
            ("render_refusals_total", "refused", "counter",
             "Misses answered 503 because no render slot came free in time."),
        ):
            lines += [
                f"# HELP huimages_{name} {text}",
                f"# TYPE huimages_{name} {kind_text}",
                f"huimages_{name} {_number(t[_ADMISSION[kind]])}",
            ]
        if self.follower_config is not None:
            lines += follower_metrics(self.follower_config)
        return "\n".join(lines) + "\n"


def _bucket(seconds: float) -> int:
    for index, bound in enumerate(BUCKETS):
        if seconds <= bound:
            return index
    return len(BUCKETS)


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)



class MetricsApp:
    """``GET /_metrics``: the node's counters for Prometheus to scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        response = only_read_methods(request.method)
        if response is None:
            response = Response(body=self.metrics.render().encode())
            response.headers["Content-Type"] = PROMETHEUS_CONTENT_TYPE
            response.cache_control = "no-store"
        return response(environ, start_response)


# -- instrumentation --------------------------------------------------------------------


class Instrumented:
    """Count and log every request of the wrapped application without touching its body.

    The response iterable is passed through unchanged, so ``wsgi.file_wrapper``
    (sendfile) keeps working; hence ``bytes`` is the Content-Length and
    ``duration_ms`` is the time to produce the response, not to transmit it.
    A request is a cache hit when the image server answered it (no service
    route) with 200, 206 or 304 and ImageMiddleware did not flag a miss.
    The wrapped app's ``.store`` and ``.config`` (when it has them) stay reachable.
    """

    def __init__(self, app: WSGIApp, metrics: Metrics | None, log_requests: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.log_requests = log_requests

    @property
    def config(self) -> Config:
        return self.app.config  # type: ignore[attr-defined]

    @property
    def store(self) -> ImageStore:
        return self.app.store  # type: ignore[attr-defined]

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()
        path = _logged_path(environ) if self.log_requests else ""
        seen: list[tuple[str, list[tuple[str, str]]]] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen.append((status, headers))
            return start_response(status, headers, exc_info)

        try:
            body = self.app(environ, capture)
        except BaseException:
            self.finish(environ, "500 Internal Server Error", [], started, path)
            raise
        if seen:
            self.finish(environ, *seen[-1], started, path)
            return body
        return _Deferred(body, lambda: self.finish(environ, *_last(seen), started, path))

    def finish(
        self,
        environ: dict[str, Any],
        status_line: str,
        headers: list[tuple[str, str]],
        started: float,
        path: str,
    ) -> None:
        seconds = time.perf_counter() - started
        status = int(status_line[:3])
        nbytes = 0
        if environ.get("REQUEST_METHOD") != "HEAD" and status not in (204, 304):
            for name, value in reversed(headers):  # the responders put it last
                if name == "Content-Length" or name.lower() == "content-length":
                    nbytes = int(value) if value.isdigit() else 0
                    break
            else:
                nbytes = environ.get(SENDFILE_BYTES_KEY, 0) if status == 200 else 0
        cache = environ.get(CACHE_KEY)
        if cache is None and ROUTE_KEY not in environ and status in (200, 206, 304):
            cache = "hit"
        if self.metrics is not None:
            self.metrics.observe(status, nbytes, cache, seconds)
        if self.log_requests and access_log.isEnabledFor(logging.INFO):
            fields = {
                "method": environ.get("REQUEST_METHOD", ""),
                "path": path,
                "status": status,
                "bytes": nbytes,
                "duration_ms": round(seconds * 1000, 2),
                "cache": cache,
                "remote": environ.get("REMOTE_ADDR", ""),
            }
            access_log.info("request", extra={"fields": fields})


def _logged_path(environ: dict[str, Any]) -> str:
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    return path or environ.get("REQUEST_URI", "").split("?", 1)[0]


def _last(seen: list[tuple[str, list[tuple[str, str]]]]) -> tuple[str, list[tuple[str, str]]]:
    return seen[-1] if seen else ("500 Internal Server Error", [])


class _Deferred:
    """For apps that call start_response lazily: account when the server closes the body."""

    def __init__(self, body: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self.body, self.on_close = body, on_close

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self.on_close()
