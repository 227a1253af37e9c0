"""The gunicorn worker ``huimages serve`` runs: gthread that slow clients cannot exhaust.

gunicorn's gthread worker hands every accepted connection to a thread as soon
as its first byte arrives, and that thread then reads the rest of the request
head with a blocking ``recv`` that has no timeout: a client that sends half a
request line and waits holds the thread for good, and as many such clients as
there are threads stall the worker (gunicorn has no header timeout setting).
:class:`GuardedThreadWorker` changes four things and nothing else:

* **Request heads are read by the event loop.** A new (or kept-alive)
  connection stays in the worker's selector until its whole head (up to the
  blank line) has arrived; only then does a thread take it, with the bytes
  already read handed to gunicorn's parser. A head must be complete
  ``header_timeout`` seconds after its first byte was awaited, else the
  connection is closed. Half-open connections cost a file descriptor, never
  a thread.
* **Every blocking socket operation of a thread is bounded** (:class:`ClientSocket`):
  a ``recv``/``send``/``sendfile`` that makes no progress for ``io_timeout``
  seconds ends the connection, and reading the rest of a request (its body)
  must be finished ``body_timeout`` seconds after the head arrived. A client
  that stalls is treated like one that went away (a connection reset, which
  gunicorn logs at debug level only). A slow reader that keeps reading holds
  its thread for as long as it reads: that is what the many threads are for.
* **A worker whose threads are all busy stops accepting**, so new connections
  wait in the listen backlog for a worker with a free thread instead of in a
  busy worker's private queue.
* **A kept-alive connection lingers in its thread for a moment**
  (``keepalive_linger``, 2 ms): if the client's next request head arrives
  whole within it, the same thread answers it at once. gthread would hand
  the connection to the event loop and back to a thread (a pipe write, three
  selector changes, a queue, a future) for every request; for cache hits
  that hand-over cost more than the answer. A head that is not complete when
  first read goes to the event loop with the bytes already read, so a slow
  client still never holds a thread longer than the linger. A thread does
  not linger while every thread of the worker is busy (connections wait for
  one), so a busy connection cannot keep its thread from them.

Rendering is bounded separately, per node, by :mod:`huimages_wsgi.admission`;
threads therefore only wait (on sockets, backends, render slots) and can be
plentiful. The settings live in :mod:`huimages_wsgi.gunicorn_conf`.
"""

from __future__ import annotations

import errno
import select
import selectors
import socket
import time
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

#: seconds from the moment a request is awaited until its head is complete
HEADER_TIMEOUT = 10.0
#: seconds a thread's socket operation may make no progress
IO_TIMEOUT = 30.0
#: seconds from a complete head until the rest of the request (the body) is read
BODY_TIMEOUT = 120.0
#: seconds a thread waits on its kept-alive connection for the next request head
KEEPALIVE_LINGER = 0.002
#: a head longer than this is handed to gunicorn's parser as is (which refuses it)
MAX_HEAD_BYTES = 64 * 1024
_END_OF_HEAD = b"\r\n\r\n"


def head_complete(head: bytes) -> bool:
    """Whether ``head`` is ready for gunicorn's parser: the whole request head, too
    long a head (the parser refuses it), or an HTTP/2 preface (the parser takes it)."""
    return _END_OF_HEAD in head or len(head) >= MAX_HEAD_BYTES or head.startswith(b"PRI ")


class ClientSocket(socket.socket):
    """An accepted connection whose blocking mode always has a timeout.

    gunicorn switches connections between non-blocking (in the selector) and
    blocking (in a thread) with ``setblocking``; here blocking means blocking
    for at most ``io_timeout`` seconds per operation, and reads also stop at
    ``read_deadline`` (a ``time.monotonic()`` value, or None). A read that
    times out ends the stream; a write that times out raises
    ``ConnectionResetError``: to gunicorn, either way, the client went away.
    """

    io_timeout: float = IO_TIMEOUT
    read_deadline: float | None = None

    @classmethod
    def adopt(cls, sock: socket.socket, io_timeout: float) -> ClientSocket:
        adopted = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        adopted.io_timeout = io_timeout
        return adopted

    def setblocking(self, flag: bool) -> None:
        if flag:
            self.settimeout(self.io_timeout)
        else:
            super().setblocking(False)

    def _bounded_read(self, empty: bytes | int, method: Any, *args: Any) -> Any:
        """A read that times out looks like the end of the stream, exactly as if the
        client had closed: a short body is then the app's 400, a short head the
        parser's quiet end of the connection; nothing is logged as an error."""
        if self.read_deadline is not None and self.gettimeout():  # a thread's blocking read
            left = self.read_deadline - time.monotonic()
            if left <= 0:
                return empty
            self.settimeout(min(self.io_timeout, left))
        try:
            return method(*args)
        except TimeoutError:
            return empty

    def recv(self, *args: Any) -> bytes:
        return self._bounded_read(b"", super().recv, *args)

    def recv_into(self, *args: Any) -> int:
        return self._bounded_read(0, super().recv_into, *args)

    def send(self, *args: Any) -> int:
        try:
            return super().send(*args)
        except TimeoutError:
            raise _too_slow("stopped reading the answer") from None

    def sendall(self, *args: Any) -> None:
        try:
            super().sendall(*args)
        except TimeoutError:
            raise _too_slow("stopped reading the answer") from None

    def sendfile(self, *args: Any, **kwargs: Any) -> int:
        try:
            return super().sendfile(*args, **kwargs)
        except TimeoutError:
            raise _too_slow("stopped reading the answer") from None


def _too_slow(what: str) -> ConnectionResetError:
    return ConnectionResetError(errno.ECONNRESET, f"client {what} (huimages worker timeout)")


class GuardedThreadWorker(ThreadWorker):
    """gthread, with request heads read by the event loop and bounded socket time.

    ``keepalive`` (a gunicorn setting) bounds idle kept-alive connections as
    in gthread; the class attributes below bound the rest (a subclass named
    as ``worker_class`` may change them).
    """

    header_timeout = HEADER_TIMEOUT
    io_timeout = IO_TIMEOUT
    body_timeout = BODY_TIMEOUT
    keepalive_linger = KEEPALIVE_LINGER

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reading_heads: dict[TConn, float] = {}  # connection -> deadline
        self.busy_threads = 0

    # -- accepting: only with a free thread ---------------------------------------------

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled and self.busy_threads < self.cfg.threads)

    def _recheck_accepting(self) -> None:
        if self.alive:
            self.set_accept_enabled(self.nr_conns < self.worker_connections)

    def accept(self, listener: socket.socket) -> None:
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, ClientSocket.adopt(client, self.io_timeout), address,
                     listener.getsockname())
        self._read_head(conn)

    # -- reading heads in the event loop --------------------------------------------------

    def _read_head(self, conn: TConn, head: bytes = b"") -> None:
        conn.huimages_head = head  # bytes of the head a thread read already, if any
        conn.sock.setblocking(False)
        self.reading_heads[conn] = time.monotonic() + self.header_timeout
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_head_data, conn))

    def _on_head_data(self, conn: TConn, _sock: Any) -> None:
        try:
            data = conn.sock.recv(MAX_HEAD_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client closed (or reset) before finishing its request
            self._drop_reading(conn)
            return
        head = conn.huimages_head + data
        conn.huimages_head = head
        if head_complete(head):
            self.poller.unregister(conn.sock)
            del self.reading_heads[conn]
            conn.data_ready = True  # gthread must not wait for data again
            self.enqueue_req(conn)

    def _drop_reading(self, conn: TConn) -> None:
        self.reading_heads.pop(conn, None)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        self.nr_conns -= 1
        conn.close()
        self._recheck_accepting()

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic() if self.alive else float("inf")  # stopping: no new requests
        for conn in [c for c, deadline in self.reading_heads.items() if deadline <= now]:
            self._drop_reading(conn)

    def on_client_socket_readable(self, conn: TConn, client: Any) -> None:
        """A kept-alive connection has data: read its next head in the event loop too."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._read_head(conn)

    # -- threads ---------------------------------------------------------------------------

    def enqueue_req(self, conn: TConn) -> None:
        self.busy_threads += 1
        if self.busy_threads >= self.cfg.threads:
            super().set_accept_enabled(False)
        super().enqueue_req(conn)

    def finish_request(self, conn: TConn, fs: Any) -> None:
        self.busy_threads -= 1
        conn.sock.read_deadline = None
        partial_head = getattr(conn, "huimages_head", b"")
        if partial_head and not fs.cancelled() and fs.exception() is None \
                and fs.result() is True:
            # the thread read part of the next head: the event loop reads the rest
            # (a stopping worker closes it, as any head still being read)
            self._read_head(conn, partial_head)
        else:
            super().finish_request(conn, fs)
        self._recheck_accepting()

    def handle(self, conn: TConn) -> Any:
        """In a thread: answer the request whose head the event loop read, then every
        next one on the connection whose head arrives whole within the linger."""
        while True:
            head = getattr(conn, "huimages_head", b"")
            conn.huimages_head = b""
            if head:
                conn.init()
                conn.parser.unreader.unread(head)
            conn.sock.read_deadline = time.monotonic() + self.body_timeout
            keep = super().handle(conn)
            if keep is not True or not self.alive or conn.is_http2 or self.cfg.is_ssl:
                return keep
            if conn.parser.unreader.buf.getvalue():
                return keep  # read ahead into the next request: gthread hands it on
            if self.busy_threads >= self.cfg.threads:
                return keep  # others wait for a thread (a racy read of an int: harmless)
            conn.sock.read_deadline = None  # that deadline was the answered request's
            head = self._next_head(conn)
            if head is None:
                return keep  # idle: the event loop keeps it alive
            if not head:
                return False  # the client closed
            conn.huimages_head = head
            if not head_complete(head):
                return keep  # finish_request lets the event loop read the rest

    def _next_head(self, conn: TConn) -> bytes | None:
        """The bytes of the next request head if any arrive within the linger
        (``b""``: the client closed), else None."""
        waiting = select.poll()
        waiting.register(conn.sock.fileno(), select.POLLIN)
        if not waiting.poll(self.keepalive_linger * 1000):
            return None
        try:
            return conn.sock.recv(MAX_HEAD_BYTES)  # readable: returns at once
        except OSError:
            return b""
