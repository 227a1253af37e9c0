"""Run a WSGI application as an external FastCGI server (flup).

The web server (lighttpd, Apache) serves the image cache directly from disk
and only forwards *misses* to this process over FastCGI; see
``huimages_wsgi/templates/`` and :mod:`huimages_wsgi.webconfig`.

flup 1.0.3 works unchanged on Python 3.11.  Quirks worth knowing:

* FastCGI params arrive as bytes and flup decodes them as latin-1, which is
  exactly the PEP 3333 "native string" convention, so non-ASCII paths are fine.
* When the web server sends no (or an empty) ``PATH_INFO``, flup derives it as
  ``REQUEST_URI[len(SCRIPT_NAME):]`` -- *without* percent-decoding and without
  checking that ``SCRIPT_NAME`` really is a prefix (it only writes a warning to
  ``wsgi.errors``).  Apache's mod_proxy_fcgi puts the whole decoded path into
  ``SCRIPT_NAME`` and no ``PATH_INFO``, and lighttpd's ``server.error-handler``
  sends the handler's URL as ``SCRIPT_NAME``; in both cases flup's guess is
  garbage.  :func:`fix_path_info` runs *before* flup's own fix-up and derives
  ``PATH_INFO`` from ``REQUEST_URI`` (path part, percent-decoded, minus a
  matching ``SCRIPT_NAME``), so the app sees the same environment behind every
  server.
* ``run()`` installs handlers for SIGHUP/SIGINT/SIGTERM and returns when one
  arrives, so :func:`serve_fcgi` must be called from the main thread.
* flup does not remove its unix socket on exit (it does unlink a stale one on
  start); :func:`serve_fcgi` removes it (in the parent only: fcgi_fork's
  children leave through ``sys.exit()`` and unwind through the same frames).
* The pre-forking server ignores SIGTERM on Python 3 (PEP 475 restarts its
  blocking ``select()``), until a child happens to report; see
  :class:`_ParentSelect` for the work-around.
* ``debug=True`` renders tracebacks with ``cgitb``, deprecated in 3.11 and
  removed in 3.13; keep the default ``debug=False``.
"""

from __future__ import annotations

import os
import select as _select
import stat
from collections.abc import Callable, MutableMapping
from typing import Any

from ..core.urls import split_request_uri

__all__ = ["DEFAULT_SOCKET_UMASK", "fix_path_info", "serve_fcgi"]

#: umask applied while flup creates the unix socket: ``srw-rw-rw-``.  The web
#: server usually runs as another user (www-data) and needs *write* permission
#: on the socket to connect(); the directory holding the socket is what should
#: restrict access.  Pass ``umask=0o117`` for ``srw-rw----`` (group access only).
DEFAULT_SOCKET_UMASK = 0o111


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


class _ParentSelect:
    """Stand-in for the ``select`` module inside flup's preforkserver.

    The pre-fork parent waits in ``select(children, [], [], None)``.  Since
    PEP 475 (Python 3.5) a signal whose handler returns no longer interrupts
    that call, so SIGTERM only sets a flag and the parent keeps sleeping until
    some child reports -- i.e. it ignored SIGTERM.  Capping the parent's
    timeout at one second makes it notice the flag.  Children (other pids)
    keep the unbounded wait: they must not fall through to a blocking
    accept() on a spurious wake-up.
    """

    def __init__(self, owner_pid: int) -> None:
        self.owner_pid = owner_pid

    def __getattr__(self, name: str) -> Any:
        return getattr(_select, name)

    def select(self, rlist, wlist, xlist, timeout=None):  # noqa: A003
        if os.getpid() == self.owner_pid and (timeout is None or timeout > 1.0):
            timeout = 1.0
        return _select.select(rlist, wlist, xlist, timeout)


def _server_class(threaded: bool) -> type:
    if threaded:
        from flup.server.fcgi import WSGIServer as base
    else:
        from flup.server import preforkserver
        from flup.server.fcgi_fork import WSGIServer as base

        preforkserver.select = _ParentSelect(os.getpid())

    class HuimagesFCGIServer(base):  # type: ignore[misc, valid-type]
        def _sanitizeEnv(self, environ):  # noqa: N802 (flup's name)
            fix_path_info(environ)
            super()._sanitizeEnv(environ)

    HuimagesFCGIServer.__name__ = f"HuimagesFCGIServer[{base.__module__}]"
    return HuimagesFCGIServer


def serve_fcgi(
    app: Callable[..., Any],
    socket_path: str | os.PathLike[str] | None = None,
    bind: tuple[str, int] | None = None,
    threaded: bool = True,
    **kwargs: Any,
) -> None:
    """Serve ``app`` over FastCGI until SIGTERM/SIGINT/SIGHUP.

    Exactly one of ``socket_path`` (unix socket, the usual choice when the web
    server runs on the same host) or ``bind`` (``(host, port)``; keep it on
    loopback, FastCGI has no authentication) must be given.

    ``threaded=True`` uses ``flup.server.fcgi.WSGIServer`` (thread pool, extra
    kwargs ``minSpare``/``maxSpare``/``maxThreads``); ``threaded=False`` uses
    the pre-forking ``flup.server.fcgi_fork.WSGIServer`` (kwargs ``minSpare``,
    ``maxSpare``, ``maxChildren``, ``maxRequests``), which sidesteps the GIL
    for CPU-bound scaling at the cost of memory.  Other kwargs (``environ``,
    ``umask``, ``multiplexed``, ``debug``...) go to flup unchanged.

    For a unix socket the ``umask`` defaults to :data:`DEFAULT_SOCKET_UMASK`
    because the socket is created with the process umask and a web server
    running as a different user could not connect() to a ``0755`` socket.
    flup only changes the umask around ``bind()`` (before any worker starts)
    and restores it afterwards.
    """
    if (socket_path is None) == (bind is None):
        raise ValueError("serve_fcgi() needs exactly one of socket_path or bind")
    if socket_path is not None:
        bind_address: str | tuple[str, int] = os.fspath(socket_path)
        kwargs.setdefault("umask", DEFAULT_SOCKET_UMASK)
    else:
        host, port = bind  # type: ignore[misc]
        bind_address = (str(host), int(port))
        kwargs.pop("umask", None)  # meaningless for TCP
    server = _server_class(threaded)(app, bindAddress=bind_address, **kwargs)
    owner = os.getpid()
    try:
        server.run()
    finally:
        # fcgi_fork children leave through sys.exit() and run this too: only
        # the process that created the socket may remove it.
        if isinstance(bind_address, str) and os.getpid() == owner:
            _remove_socket(bind_address)


def _remove_socket(path: str) -> None:
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass
