"""Run a WSGI application as an external FastCGI server (flup, public API only).

The web server (lighttpd, Apache, nginx) serves the image cache directly from
disk and only forwards *misses* to this process over FastCGI; see
``deploy/templates/`` and :mod:`huimages_wsgi.deploy.webconfig`.

Usage::

    from huimages_wsgi.deploy.fcgi import serve_fcgi
    serve_fcgi(make_app(), socket_path="/run/huimages/app.sock")

Everything goes through ``flup.server.fcgi.WSGIServer`` and its documented
arguments. Quirks worth knowing:

* FastCGI params arrive as bytes and flup decodes them as latin-1, which is
  exactly the PEP 3333 "native string" convention, so non-ASCII paths are fine.
* When the web server sends no (or an empty) ``PATH_INFO``, flup derives it as
  ``REQUEST_URI[len(SCRIPT_NAME):]`` -- *without* percent-decoding and without
  checking that ``SCRIPT_NAME`` really is a prefix. :func:`request_uri_paths`
  wraps the application and replaces exactly that guess by the decoded path
  (:func:`fix_path_info`), so the app sees the same environment behind every
  server.
* ``run()`` installs handlers for SIGHUP/SIGINT/SIGTERM and returns when one
  arrives, so :func:`serve_fcgi` must be called from the main thread.
* flup does not remove its unix socket on exit; :func:`serve_fcgi` does.
* ``processes=N`` does not use flup's pre-forking server (its parent sleeps
  through SIGTERM on Python 3: PEP 475 restarts its ``select()``). This module
  binds the socket, forks N children that each run the threaded server on it
  the way a web server spawns a FastCGI application (the listening socket as
  file descriptor 0, flup's ``bindAddress=None``), starts a child again when
  one dies, and stops them all on SIGTERM. The socket is non-blocking: all
  children wake for a connection and one gets it; a blocking accept() in the
  others would hold them past SIGTERM.
* ``debug=True`` renders tracebacks with ``cgitb``, deprecated in 3.11 and
  removed in 3.13; keep the default ``debug=False``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import stat
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from ..core.urls import split_request_uri
from .multiprocess import process_exited

__all__ = ["DEFAULT_SOCKET_UMASK", "fix_path_info", "request_uri_paths", "serve_fcgi"]

log = logging.getLogger("huimages_wsgi")

#: umask applied while the unix socket is created: ``srw-rw-rw-``.  The web
#: server usually runs as another user (www-data) and needs *write* permission
#: on the socket to connect(); the directory holding the socket is what should
#: restrict access.  Pass ``umask=0o117`` for ``srw-rw----`` (group access only).
DEFAULT_SOCKET_UMASK = 0o111
#: What stops the server (flup stops on the same three).
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: Seconds the children get to finish their requests after SIGTERM.
STOP_TIMEOUT = 10.0

WSGIApp = Callable[..., Any]


def fix_path_info(environ: MutableMapping[str, Any]) -> None:
    """Fill an empty ``PATH_INFO`` from ``REQUEST_URI`` (decoded), in place.

    ``SCRIPT_NAME`` is stripped from the front only when it is a proper path
    prefix (followed by ``/``); otherwise it does not describe this request
    (lighttpd's error handler URL, or mod_proxy_fcgi's habit of sending the
    whole path as SCRIPT_NAME) and is reset to ``""``.
    """
    if environ.get("PATH_INFO"):
        return
    request_uri = environ.get("REQUEST_URI")
    if not request_uri:
        return
    script, path = split_request_uri(request_uri, environ.get("SCRIPT_NAME") or "")
    environ["SCRIPT_NAME"], environ["PATH_INFO"] = script, path


def request_uri_paths(app: WSGIApp) -> WSGIApp:
    """``app`` behind flup: ``PATH_INFO`` that flup guessed from ``REQUEST_URI`` (the raw
    path minus as many characters as ``SCRIPT_NAME`` has) is derived again, decoded and
    with ``SCRIPT_NAME`` checked (:func:`fix_path_info`). A ``PATH_INFO`` the web server
    sent differs from that guess (it is decoded) and is left alone, unless a rewrite
    made it equal by chance (the rendered configurations send ``SCRIPT_NAME=""``)."""

    def paths_from_request_uri(environ: dict[str, Any], start_response: Callable) -> Any:
        request_uri = environ.get("REQUEST_URI")
        if request_uri:
            raw = request_uri.split("?", 1)[0]
            if environ.get("PATH_INFO") == raw[len(environ.get("SCRIPT_NAME") or ""):]:
                environ["PATH_INFO"] = ""
                fix_path_info(environ)
        return app(environ, start_response)

    return paths_from_request_uri


def serve_fcgi(
    app: WSGIApp,
    socket_path: str | os.PathLike[str] | None = None,
    bind: tuple[str, int] | None = None,
    processes: int = 1,
    **kwargs: Any,
) -> None:
    """Serve ``app`` over FastCGI until SIGTERM/SIGINT/SIGHUP.

    Exactly one of ``socket_path`` (unix socket, the usual choice when the web
    server runs on the same host) or ``bind`` (``(host, port)``; keep it on
    loopback, FastCGI has no authentication) must be given.

    Each process runs ``flup.server.fcgi.WSGIServer`` (a thread pool; kwargs
    ``minSpare``/``maxSpare``/``maxThreads``, ``multiplexed``, ``debug``...
    go to flup unchanged). ``processes`` above 1 forks that many, which
    sidesteps the GIL for CPU-bound scaling at the cost of memory.

    For a unix socket the ``umask`` defaults to :data:`DEFAULT_SOCKET_UMASK`
    because the socket is created with the process umask and a web server
    running as a different user could not connect() to a ``0755`` socket.
    The umask is changed around ``bind()`` only.
    """
    if (socket_path is None) == (bind is None):
        raise ValueError("serve_fcgi() needs exactly one of socket_path or bind")
    if processes < 1:
        raise ValueError("serve_fcgi() needs processes >= 1")
    umask = kwargs.pop("umask", DEFAULT_SOCKET_UMASK)  # None: the process's umask as it is
    path = os.fspath(socket_path) if socket_path is not None else None
    old = {signum: signal.signal(signum, _raise_stop) for signum in _STOP_SIGNALS}
    listener = None
    try:  # a signal before flup installs its own handlers stops the server too
        listener = _listen(path, bind, umask)
        if processes == 1:
            _serve_here(app, listener, kwargs)
        else:
            _Children(app, listener, processes, kwargs).run()
    except _Stop:
        pass
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)
        if listener is not None:
            listener.close()
            if path is not None:
                _remove_socket(path)


def _listen(path: str | None, bind: tuple[str, int] | None, umask: int | None) -> socket.socket:
    """The listening socket, as flup would bind it (a stale unix socket replaced)."""
    if path is not None:
        _remove_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(umask) if umask is not None else None
        try:
            sock.bind(path)
        finally:
            if old is not None:
                os.umask(old)
    else:
        host, port = bind  # type: ignore[misc]
        sock = socket.socket(socket.AF_INET6 if ":" in str(host) else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((str(host), int(port)))
    sock.listen(socket.SOMAXCONN)
    # Non-blocking: every process wakes when a connection arrives and only one gets
    # it; the others' accept() says EAGAIN (flup goes back to its select()) instead of
    # blocking, where a stop signal could no longer reach them (PEP 475).
    sock.setblocking(False)
    return sock


def _serve_here(app: WSGIApp, listener: socket.socket, options: dict[str, Any]) -> None:
    """flup's threaded server in this process, on ``listener`` as FastCGI's file
    descriptor 0 (``bindAddress=None``: a server spawned by its web server)."""
    from flup.server.fcgi import WSGIServer

    saved = os.dup(0)  # stdin comes back afterwards, so closing the listener closes it
    os.dup2(listener.fileno(), 0)
    try:
        WSGIServer(request_uri_paths(app), bindAddress=None, **options).run()
    finally:
        os.dup2(saved, 0)
        os.close(saved)


class _Stop(BaseException):
    """Raised by the stop signals' handler outside flup, so a blocking wait ends at once."""


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop


class _Children:
    """``processes`` children serving one socket; started again when they die."""

    def __init__(self, app: WSGIApp, listener: socket.socket, processes: int,
                 options: dict[str, Any]) -> None:
        self.app, self.listener, self.processes, self.options = app, listener, processes, options
        self.pids: set[int] = set()
        self.parent = os.getpid()

    def run(self) -> None:
        """Keep ``processes`` children until a stop signal (:class:`_Stop`), then stop them."""
        try:
            while True:
                while len(self.pids) < self.processes:
                    self._start()
                self._reap(os.wait())
        except _Stop:
            pass
        finally:
            for signum in _STOP_SIGNALS:  # a second signal must not orphan the children
                signal.signal(signum, signal.SIG_IGN)
            self._stop()

    def _reap(self, waited: tuple[int, int]) -> None:
        pid, status = waited
        code = os.waitstatus_to_exitcode(status)
        if pid not in self.pids:  # another child of this process (the node's follower)
            log.error("child process %d exited (%d)", pid, code)
            return
        self.pids.discard(pid)
        process_exited(pid)  # its live gauges leave /_metrics (multiprocess.py)
        log.error("FastCGI process %d exited (%d); starting another", pid, code)
        time.sleep(0.5)  # a child that dies at once must not spin the parent

    def _start(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)  # no _Stop between fork and add
        try:
            pid = os.fork()
            if pid == 0:
                self._child()
            self.pids.add(pid)
        except OSError as exc:  # out of processes or memory for now: try again soon
            log.error("cannot start a FastCGI process: %s", exc)
            time.sleep(1.0)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)

    def _child(self) -> None:
        """Serve until SIGTERM (flup's handlers); never unwind into the parent's code."""
        code = 0
        try:
            for signum in _STOP_SIGNALS:
                signal.signal(signum, _raise_stop)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
            threading.Thread(target=_stop_when_orphaned, args=(self.parent,), daemon=True,
                             name="parent-watch").start()
            _serve_here(self.app, self.listener, {"multiprocess": True, **self.options})
        except _Stop:
            pass
        except BaseException:  # noqa: BLE001 - logged, and the parent starts another
            log.exception("FastCGI process failed")
            code = 1
        finally:
            os._exit(code)

    def _stop(self) -> None:
        for pid in self.pids:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.pids and time.monotonic() < deadline:
            for pid in list(self.pids):
                if _reaped(pid, os.WNOHANG):
                    self.pids.discard(pid)
            time.sleep(0.05)
        for pid in self.pids:
            log.error("FastCGI process %d did not stop within %g s; killed", pid, STOP_TIMEOUT)
            _signal(pid, signal.SIGKILL)
            _reaped(pid, 0)
        self.pids.clear()


def _stop_when_orphaned(parent: int) -> None:
    """In a child: SIGTERM itself (flup then stops) once its parent is gone, killed
    without the chance to stop it; else it would serve the socket forever."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def _reaped(pid: int, options: int) -> bool:
    """Whether child ``pid`` has exited and is reaped (already reaped counts)."""
    try:
        return os.waitpid(pid, options)[0] == pid
    except ChildProcessError:
        return True


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _remove_socket(path: str) -> None:
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass
