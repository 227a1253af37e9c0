"""Admission of renders by the wait they can expect: counters under one lock per process.

Rendering is CPU-bound: letting every miss render at once makes all of them
slow, cache hits with them. So each process renders at most ``slots`` misses
at once (``HUIMAGES_RENDER_SLOTS``, default one per core) and lets the others
wait in arrival order. A miss is admitted while the wait it can expect stays
within ``HUIMAGES_RENDER_WAIT``: the work queued ahead of it (each waiting
miss at the recent render time of its kind) divided by the slots. Beyond
that it is answered at once with 503 and ``Retry-After`` (:class:`RenderBusy`),
which tells a load balancer or CDN early that this node is full, and so is a
miss that finds ``HUIMAGES_RENDER_QUEUE`` misses already waiting (each holds a
server thread, and threads must stay free for cache hits). A miss admitted
but still waiting when its wait is over is refused the same way.

Renders from upload-time previews, and from originals libjpeg decodes at a
small DCT scale, take a few milliseconds, so many of them queue within the
wait and the node finishes what it is asked; a storm of large decodes (more
than ``LARGE_DECODE`` pixels: a size no preview serves of a big original, a
non-JPEG decoded whole) expects long waits and gets quick 503s. A large
decode holds a decoded photo, so at most ``decode_slots`` of them run at once
in a process (``HUIMAGES_RENDER_SLOTS_PER_PROCESS``; ``huimages serve`` sets
the node's cores divided among its workers): that bounds a worker's memory.
A waiting large decode never holds back a render that a free slot can take.

Nothing is shared between processes: every worker admits by its own queue,
each sized for a whole node's cores, as the kernel shares the cores out
between them. Uploads enter like misses (``ImageStore.save``: the decode that
checks one and makes its previews). Cache hits, 304s and every other endpoint
never enter.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..core.config import Config
from ..core.errors import HuImagesError
from ..core.forks import forget_after_fork

log = logging.getLogger("huimages_wsgi")

#: A render decoding more pixels than this is a large decode: it takes a decode slot
#: (about 16 MB decoded; a 12 MP photo's half-scale decode is 3 MP).
LARGE_DECODE = 4_000_000
#: Seconds a render is assumed to take before any was measured, by kind (large?).
FIRST_GUESS = {False: 0.02, True: 0.25}
#: Misses a process lets wait when nothing says how many threads its server has.
DEFAULT_QUEUE = 48
#: Threads a server keeps free of waiting misses, for hits and the other endpoints.
HIT_THREADS = 16
#: Weight of the newest render in the running estimate of its kind.
SMOOTHING = 0.2

#: ``observer(kind, value)``: "queued" and "running" with +1/-1 (gauges), "waited" with
#: the seconds a request waited before it started, "refused" with 1.
Observer = Callable[[str, float], None]


class RenderBusy(HuImagesError):
    """This node expects to be busy longer than a miss should wait: come back later.

    Not a GenerationBusy on purpose: that one is logged as a warning per
    request, and under overload these are many and expected (they are counted
    in ``/_metrics`` instead).
    """

    status = 503
    logged = False


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, as a container sees it)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class _Waiter:
    """One miss in the queue; ``granted`` is set (under the lock) when it may start."""

    __slots__ = ("large", "granted")

    def __init__(self, large: bool) -> None:
        self.large = large
        self.granted = threading.Event()


class Admission:
    """Admission of one process's misses (see the module's docstring)."""

    def __init__(self, slots: int, decode_slots: int, wait: float, queue: int,
                 observer: Observer | None = None) -> None:
        self.slots = max(1, slots)
        self.decode_slots = max(1, min(decode_slots, self.slots))
        self.wait = wait
        self.queue = queue
        self.observer = observer
        self._lock = threading.Lock()
        self._waiting: deque[_Waiter] = deque()
        self._queued = {False: 0, True: 0}  # waiters by kind (large decode?): O(1) estimates
        self._running = 0
        self._decoding = 0
        self._seconds = dict(FIRST_GUESS)  # recent render time, by kind (large decode?)
        forget_after_fork(self)

    @classmethod
    def from_config(cls, config: Config) -> Admission | None:
        """The admission ``config`` asks for; None for ``HUIMAGES_RENDER_SLOTS=0``."""
        slots = cpu_count() if config.render_slots is None else config.render_slots
        if slots <= 0:
            return None
        decode = config.render_slots_per_process or slots
        queue = DEFAULT_QUEUE if config.render_queue is None else config.render_queue
        return cls(slots, decode, config.render_wait, queue)

    def after_fork(self) -> None:
        """A forked child starts with none of its parent's renders or waiters."""
        self._lock = threading.Lock()
        self._waiting, self._running, self._decoding = deque(), 0, 0
        self._queued = {False: 0, True: 0}

    def expected_wait(self, large: bool) -> float:
        """Seconds a miss arriving now would wait for a slot, by the recent render times."""
        with self._lock:
            return self._expected_wait(large)

    def _expected_wait(self, large: bool) -> float:
        ahead = sum(count * self._seconds[kind] for kind, count in self._queued.items())
        expected = ahead / self.slots
        if large:  # it also waits for a decode slot, behind the decodes ahead of it
            decodes = self._decoding + self._queued[True]
            expected = max(expected, decodes * self._seconds[True] / self.decode_slots)
        elif self._running >= self.slots:  # and for a render to end
            expected += self._seconds[False] / self.slots
        return expected

    def check_room(self) -> None:
        """Refuse at once, before the catalog is asked, a miss that would be refused
        anyway: every slot taken and the queue full, or even a render of the cheap kind
        expecting to wait too long. Under a storm most misses are refused here, so a
        refusal costs the node next to nothing."""
        with self._lock:
            if self._running < self.slots:
                return
            if len(self._waiting) >= self.queue:
                raise self._refused("its queue is full")
            if self._expected_wait(False) > self.wait:
                raise self._refused(f"it expects to be busy for more than {self.wait:g} s")

    @contextmanager
    def render(self, large: bool) -> Iterator[None]:
        """Hold a slot (and for a large decode a decode slot) while rendering."""
        me = _Waiter(large)
        began = time.monotonic()
        with self._lock:
            # waiters are there only while they cannot start, so this one can start
            # now exactly when a slot (and for a decode, a decode slot) is free
            free = self._running < self.slots and (
                not large or self._decoding < self.decode_slots)
            if not free and len(self._waiting) >= self.queue:
                raise self._refused("its queue is full")
            if not free and self._expected_wait(large) > self.wait:
                raise self._refused(f"it expects to be busy for more than {self.wait:g} s")
            self._waiting.append(me)
            self._queued[large] += 1
            self._note("queued", 1)
            self._dispatch()
        if not me.granted.wait(self.wait):  # only its own grant wakes a waiter
            with self._lock:
                if not me.granted.is_set():  # else granted just now: it goes on
                    self._waiting.remove(me)
                    self._queued[large] -= 1
                    self._note("queued", -1)
                    raise self._refused(f"no render slot within {self.wait:g} s")
        self._note("waited", time.monotonic() - began)
        self._note("running", 1)
        started = time.monotonic()
        try:
            yield
        finally:
            seconds = time.monotonic() - started
            with self._lock:
                self._running -= 1
                self._decoding -= large
                estimate = self._seconds[large]
                self._seconds[large] = estimate + SMOOTHING * (seconds - estimate)
                self._dispatch()
            self._note("running", -1)

    def _dispatch(self) -> None:
        """Start waiters in arrival order while slots are free; a decode waiting for a
        decode slot lets the renders behind it pass."""
        for waiter in list(self._waiting):
            if self._running >= self.slots:
                break
            if waiter.large and self._decoding >= self.decode_slots:
                continue
            self._waiting.remove(waiter)
            self._queued[waiter.large] -= 1
            self._note("queued", -1)
            self._running += 1
            self._decoding += waiter.large
            waiter.granted.set()

    def _refused(self, why: str) -> RenderBusy:
        self._note("refused", 1)
        return RenderBusy(f"this node is busy rendering: {why}; try again shortly")

    def _note(self, kind: str, value: float) -> None:
        if self.observer is not None:
            try:
                self.observer(kind, value)
            except Exception:  # noqa: BLE001 - counting must never fail a request
                log.exception("admission observer failed")
