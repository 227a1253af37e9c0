"""One follower per node: started beside ``huimages serve`` and ``huimages fcgi`` as a
child process, or alone as ``huimages follow``; an ``flock`` makes sure of one, and
that process keeps the following itself running in a child of its own."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from ..core.config import Config
from ..core.locks import try_lock
from .follower import Follower, write_json_atomic
from .status import follower_dir, read_json

log = logging.getLogger("huimages_wsgi")

#: Seconds before a follower that exited is started again, doubling up to the most.
RESTART_BACKOFF = 1.0
MAX_RESTART_BACKOFF = 30.0


def hold_lock(config: Config, stop: Callable[[], bool]) -> int | None:
    """Wait for this node's follower lock (another follower may still be leaving)."""
    directory = follower_dir(config)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    told = False
    while not stop():
        if try_lock(fd):
            return fd
        if not told:
            log.info("another follower runs for %s; waiting for it to stop", config.cache_root)
            told = True
        time.sleep(0.5)
    os.close(fd)
    return None


class _Stopped(BaseException):
    """Raised by the first SIGTERM/SIGINT/SIGHUP, so a blocking feed read ends at once.

    A BaseException, like KeyboardInterrupt, so no ``except Exception`` on the
    way swallows it. Stopping anywhere is safe: the checkpoint is written
    atomically and purging is idempotent, so the next start goes on from the
    last checkpoint.
    """


def run_follower(config: Config, parent: int | None = None) -> None:
    """``huimages follow``: follow until SIGTERM/SIGINT (or until ``parent`` is gone).

    This process holds the node's lock and supervises: the following itself
    runs in a child (``_follow``), started again with a backoff whenever it
    exits on its own, each restart counted in the state file (``/_health``,
    ``/_metrics``). The child leaves when this process does.
    """
    stopping: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        stopping.append(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)

    def stop() -> bool:
        return bool(stopping) or (parent is not None and os.getppid() != parent)

    fd = hold_lock(config, stop)
    if fd is None:
        return
    try:
        supervise(config, stop)
    finally:
        os.close(fd)
    log.info("follower for %s stopped", config.cache_root)


def supervise(config: Config, stop: Callable[[], bool], backoff: float = RESTART_BACKOFF) -> None:
    """Run ``_follow`` in a child process until ``stop()``; restart it when it exits."""
    delay = backoff
    context = multiprocessing.get_context("fork")  # this process has no other thread
    while not stop():
        started = time.monotonic()
        child = context.Process(target=_follow, args=(config, os.getpid()), name="follower")
        child.start()
        while child.is_alive() and not stop():
            child.join(0.2)
        if stop() or _stopping_soon(stop):  # the child stops at once, mid-read if need be
            child.terminate()
            child.join(10)
            if child.is_alive():
                child.kill()
                child.join()
            return
        if time.monotonic() - started > 60:
            delay = backoff  # it ran a good while: start again quickly
        log.error("follower process exited with %s; starting it again in %.1f s",
                  child.exitcode, delay)
        note_restart(config, child.exitcode)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not stop():
            time.sleep(0.1)
        delay = min(delay * 2, MAX_RESTART_BACKOFF)


def _stopping_soon(stop: Callable[[], bool]) -> bool:
    """Whether a stop arrives in the next moment: a signal to the whole process group
    (Ctrl-C, a service manager) may reach the child a little before this process."""
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        if stop():
            return True
        time.sleep(0.05)
    return False


def note_restart(config: Config, exitcode: int | None) -> None:
    """Count a restart in the state file the dead follower left."""
    path = follower_dir(config) / "state.json"
    state = read_json(path) or {}
    state["restarts_total"] = int(state.get("restarts_total") or 0) + 1
    state["error"] = f"the follower process exited with {exitcode}; started again"
    try:
        write_json_atomic(path, state)
    except OSError as exc:
        log.error("follower cannot write its state: %s", exc)


def _follow(config: Config, supervisor: int) -> None:
    """The child: follow until SIGTERM or until the supervisor is gone."""
    stopping: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        first = not stopping
        stopping.append(signum)
        if first:
            raise _Stopped

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    try:
        follower = Follower(config)
        log.info("follower for %s on %s (heartbeat %.1f s)", config.cache_root,
                 follower.catalog.describe(), follower.heartbeat)
        try:
            follower.run(lambda: bool(stopping) or os.getppid() != supervisor)
        finally:
            follower.close()
    except _Stopped:
        pass


def start_follower_process(config: Config) -> subprocess.Popen | None:
    """The node's follower as a child process (``huimages follow``), or None if switched off.

    A process rather than a thread: the gunicorn master forks workers, and a
    fork must not copy a thread that holds locks. The child leaves when this
    process does (it watches its parent).
    """
    if not config.follow:
        return None
    env = dict(os.environ)
    config.export(env)
    command = [sys.executable, "-m", "huimages_wsgi.cli", "follow", "--parent", str(os.getpid())]
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
    process.owner_pid = os.getpid()  # type: ignore[attr-defined]
    return process


def stop_follower_process(process: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """Stop it, from the process that started it only (flup's forked children unwind
    through the same ``finally`` and must leave the node's follower alone)."""
    if process is None or getattr(process, "owner_pid", None) != os.getpid():
        return
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
