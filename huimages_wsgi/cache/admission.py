"""Admission control for renders: a bounded number at once per node, a bounded wait.

Rendering is CPU-bound; letting every request that misses the cache render
at once only makes all of them slow (and cache hits with them). So a miss
must first take one of ``HUIMAGES_RENDER_SLOTS`` render slots (default: the
number of cores); one that cannot get a slot within ``HUIMAGES_RENDER_WAIT``
seconds is answered with 503 and ``Retry-After`` (:class:`RenderBusy`), and so
is one that finds ``max(16, 4 x slots)`` misses of its process already waiting (a wait
holds a server thread, and threads must stay free for cache hits). That tells
a load balancer or CDN early that this node is full. That limit counts every
miss of the process that is not rendering, from before its catalog lookup
(:meth:`RenderSlots.place`), but for those waiting for another request of the
process for the same variant (they share its answer; directory.py): a miss
refused for a full line touches no backend at all, so an overloaded node
does not also overload its catalog, and its threads are back for cache hits
at once. Cache hits, 304s and every other endpoint never take a place or a
slot.

A process holds at most ``HUIMAGES_RENDER_SLOTS_PER_PROCESS`` of the node's
slots for renders that decode the whole original (``huimages serve`` sets its
share, slots / workers), because each holds a decoded photo: that bounds a
worker's memory. Renders from an upload-time preview (most sizes) decode a
few megapixels at most and may take any free slot of the node, so a worker
that happens to get more of the misses than the others still uses the whole
node's cores for them.

The slots are per node, across all worker processes (gunicorn workers,
flup's forked children): slot *i* is an ``flock`` on the file
``<cache>/.locks/render-slot-<i>``, which the kernel releases when its holder
exits, even by SIGKILL, so a crashed worker never leaks a slot. Within one
process the threads waiting for a slot queue in arrival order, one queue for
whole-original decodes and one for renders from previews (so a decode held
back by the share never holds back a render a free slot could take), and only
the first of each queue polls the slot files (every few milliseconds; a slot
freed in the same process wakes them at once), so a crowd of waiters costs no
CPU.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..core.config import Config
from ..core.errors import HuImagesError

log = logging.getLogger("huimages_wsgi")

#: seconds between two looks at the slot files while slots are held by other processes
POLL_INTERVAL = 0.005
#: misses one process lets wait for a slot: 4 per slot, at least 16 (a quarter of a
#: gunicorn worker's 64 threads); more are refused at once
QUEUE_PER_SLOT = 4
MIN_QUEUE = 16
SLOT_FILE = "render-slot-{:03d}"
_FORK_LOCK = threading.Lock()

#: ``observer(kind, value)``: "queued" and "running" with +1/-1 (gauges), "waited" with
#: the seconds a request waited before it got a slot, "refused" with 1.
Observer = Callable[[str, float], None]


class RenderBusy(HuImagesError):
    """Every render slot of this node stayed taken for the whole wait: come back later.

    Not a GenerationBusy on purpose: that one is logged as a warning per
    request, and under overload these are many and expected (they are counted
    in ``/_metrics`` instead).
    """

    status = 503


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, as a container sees it)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class _Waiter:
    """A request waiting for a slot: its place in the arrival order, and its wake-up."""

    __slots__ = ("ticket", "event")

    def __init__(self, ticket: int) -> None:
        self.ticket = ticket
        self.event = threading.Event()


class RenderSlots:
    """At most ``slots`` renders at once on this node; ``slots == 0`` switches it off."""

    def __init__(
        self, lock_dir: Path, slots: int, wait: float, observer: Observer | None = None,
        per_process: int | None = None,
    ) -> None:
        self.lock_dir = Path(lock_dir)
        self.slots = max(0, slots)
        self.wait = max(0.0, wait)
        #: at most this many of the node's slots held by one process for renders that
        #: decode the whole original (None: any number), so that one worker's memory is
        #: bounded: each holds a decoded photo. Renders from previews are not counted.
        self.per_process = per_process
        self.observer = observer
        self._reset()

    @classmethod
    def from_config(cls, config: Config) -> RenderSlots:
        slots = cpu_count() if config.render_slots is None else config.render_slots
        return cls(config.cache_root / ".locks", slots, config.render_wait,
                   per_process=config.render_slots_per_process)

    def _reset(self) -> None:
        """Per-process state: descriptors are never shared with a forked child."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._fds: list[int | None] = [None] * self.slots
        self._held = [False] * self.slots
        self._full_decodes = 0  # slots of this process held by renders of whole originals
        # waiters in arrival order, one queue per kind (True: whole-original decodes), so
        # a decode that waits for this process's share never holds up renders from
        # previews that a free slot of the node could take
        self._queues: dict[bool, deque[_Waiter]] = {True: deque(), False: deque()}
        self._tickets = itertools.count()  # arrival order across both queues
        self._placed = 0  # misses of this process in place(): looking up, waiting, rendering
        self._rendering = 0  # renders of this process in slot(), with a slot or unlimited
        self._broken = False

    @property
    def line_limit(self) -> int:
        """Misses of one process that may wait (look up their image, or wait for a slot)."""
        return max(MIN_QUEUE, QUEUE_PER_SLOT * self.slots)

    @contextmanager
    def place(self) -> Iterator[None]:
        """Hold this miss's place in the process's line for the ``with`` block, which
        looks the image up and then takes its :meth:`slot`; RenderBusy at once, before
        any of that, when ``line_limit`` misses of this process already wait (every
        miss in ``place`` but those rendering)."""
        if not self.slots:
            yield
            return
        self._after_fork()
        with self._lock:
            if self._placed - self._rendering >= self.line_limit:
                raise self._refused("with a full queue")
            self._placed += 1
        try:
            yield
        finally:
            with self._lock:
                self._placed -= 1

    @contextmanager
    def slot(self, full_decode: bool = True) -> Iterator[None]:
        """Hold a render slot for the ``with`` block; RenderBusy if none came in time.

        ``full_decode``: the render decodes the whole original (it counts towards
        this process's share); False for a render from a preview."""
        if not self.slots:
            yield
            return
        self._after_fork()
        index = self._acquire(full_decode)
        with self._lock:
            self._rendering += 1
        try:
            if index is None:  # the slot files cannot be used: render without a limit
                yield
                return
            self._note("running", 1)
            try:
                yield
            finally:
                self._note("running", -1)
                self._release(index, full_decode)
        finally:
            with self._lock:
                self._rendering -= 1

    def _after_fork(self) -> None:
        """A forked child starts afresh: its parent's descriptors and counts are not its own
        (checked under a lock of the module, so two threads of the child reset it once)."""
        if self._pid != os.getpid():
            with _FORK_LOCK:
                if self._pid != os.getpid():
                    self._reset()

    # -- taking and giving back -------------------------------------------------------------

    def _acquire(self, full_decode: bool) -> int | None:
        started = time.monotonic()
        deadline = started + self.wait
        queue, others = self._queues[full_decode], self._queues[not full_decode]
        with self._lock:
            me = _Waiter(next(self._tickets))
            if not queue and self._ahead_of(me, full_decode):
                index = self._take(full_decode)
                if index != -1:
                    return index
            if len(queue) + len(others) >= self.line_limit:  # (never within a place)
                raise self._refused("with a full queue")
            queue.append(me)
        self._note("queued", 1)
        try:
            while True:
                with self._lock:
                    first = queue[0] is me  # the first of each queue polls
                    if first and self._ahead_of(me, full_decode):
                        index = self._take(full_decode)
                        if index != -1:
                            queue.popleft()
                            if queue:
                                queue[0].event.set()  # the next one polls now
                            self._note("waited", time.monotonic() - started)
                            return index
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._refused("")
                me.event.wait(min(left, POLL_INTERVAL) if first else left)
                me.event.clear()
        finally:
            with self._lock:
                if me in queue:  # gave up: let the next one take over the polling
                    was_first = queue[0] is me
                    queue.remove(me)
                    if was_first and queue:
                        queue[0].event.set()
                others_first = others[0] if others else None
            if others_first is not None:
                others_first.event.set()  # it may be first in line now
            self._note("queued", -1)

    def _ahead_of(self, me: _Waiter, full_decode: bool) -> bool:
        """Under ``_lock``: whether no waiter of the other kind comes before ``me``:
        first come, first served, except that a whole-original decode held back by
        this process's share does not hold back a render from a preview."""
        others = self._queues[not full_decode]
        if not others or others[0].ticket > me.ticket:
            return True
        return not full_decode and self._share_used()

    def _share_used(self) -> bool:
        """Under ``_lock``: this process holds its share of whole-original decodes."""
        return self.per_process is not None and self._full_decodes >= self.per_process

    def _take(self, full_decode: bool) -> int | None:
        """Under ``_lock``: a slot index now held, -1 if all are taken, None if broken."""
        if self._broken:
            return None
        if full_decode and self._share_used():
            return -1  # this process's share is in use: wait as for a busy node
        for index in range(self.slots):
            if self._held[index]:
                continue
            try:
                fd = self._fds[index]
                if fd is None:
                    self.lock_dir.mkdir(parents=True, exist_ok=True)
                    path = self.lock_dir / SLOT_FILE.format(index)
                    fd = self._fds[index] = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    continue  # another process renders in this slot
                self._broken = True
                log.error("render admission disabled: cannot use %s: %s", self.lock_dir, exc)
                return None
            self._held[index] = True
            self._full_decodes += full_decode
            return index
        return -1

    def _release(self, index: int, full_decode: bool) -> None:
        with self._lock:
            fd = self._fds[index]
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
            self._held[index] = False
            self._full_decodes -= full_decode
            for queue in self._queues.values():
                if queue:
                    queue[0].event.set()  # its first polls now

    def _refused(self, why: str) -> RenderBusy:
        """A refusal, counted: the 503 the caller raises."""
        self._note("refused", 1)
        why = f" {why}" if why else ""
        return RenderBusy(
            f"this node is rendering at capacity ({self.slots} at once){why}; retry shortly"
        )

    def _note(self, kind: str, value: float) -> None:
        if self.observer is not None:
            self.observer(kind, value)
