"""What a forked child must let go of: the one place the package hooks ``os.fork``.

flup's forking server and any pre-forking host copy a process that may hold
per-process state (the metrics' instruments, a render queue). An object that holds
such state registers with ``forget_after_fork``; in a forked child its
``after_fork`` is called before the child runs anything else. The hook is
installed on the first registration, not on import.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Protocol


class ForkAware(Protocol):
    def after_fork(self) -> None: ...


_objects: weakref.WeakSet[ForkAware] = weakref.WeakSet()
_lock = threading.Lock()
_installed = False


def forget_after_fork(obj: ForkAware) -> None:
    """Call ``obj.after_fork()`` in every child forked from now on, while ``obj`` lives."""
    global _installed
    with _lock:
        if not _installed:
            os.register_at_fork(after_in_child=_in_child)
            _installed = True
        _objects.add(obj)


def _in_child() -> None:
    global _lock
    _lock = threading.Lock()  # the parent's may have been held by another thread
    for obj in list(_objects):
        obj.after_fork()
