"""Kept-alive connections of the gunicorn worker (``huimages_wsgi.deploy.worker``), over
real sockets.

After an answer, a thread waits ``keepalive_linger`` for the connection's next
request head and answers it itself when it arrives whole; a head that arrives
in pieces goes to the event loop with the bytes already read; an idle
connection goes back to the event loop. Each path must answer correctly and
never let a slow client hold a thread. ``tests.workerclasses.LingeringWorker``
stretches the linger to a second so the paths can be driven by hand.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from huimages_wsgi import Config, ImageStore
from huimages_wsgi.cache.admission import RenderSlots
from huimages_wsgi.core.ids import compute_id

from .. import imagefactory as f
from ..conftest import BIN, free_port
from ..webservers import HttpBackend

DEFAULT = "huimages_wsgi.deploy.worker.GuardedThreadWorker"
LINGERING = "tests.workerclasses.LingeringWorker"
LONG_LINGERING = "tests.workerclasses.LongLingeringWorker"
RENDER_SLOTS = 2  # the server's (HUIMAGES_RENDER_SLOTS), so a test can hold them all


class Gunicorn(HttpBackend):
    """``gunicorn -c python:huimages_wsgi.deploy.gunicorn_conf -k <worker>``, one worker process,
    on a free port (``huimages serve`` would always use the default worker class)."""

    def __init__(self, data_dir: Path, worker: str, threads: int) -> None:
        port = free_port()
        super().__init__(port=port, log_path=data_dir.parent / f"gunicorn-{port}.log", env={
            "HUIMAGES_DATA_DIR": str(data_dir),
            "HUIMAGES_RENDER_SLOTS": str(RENDER_SLOTS), "HUIMAGES_RENDER_WAIT": "10",
        })
        self.worker, self.threads = worker, threads

    def command(self) -> list[str]:
        return [str(BIN / "gunicorn"), "-c", "python:huimages_wsgi.deploy.gunicorn_conf",
                "-k", self.worker, "-w", "1", "--threads", str(self.threads),
                "-b", f"{self.host}:{self.port}", "huimages_wsgi:make_app()"]

    def connect(self) -> Client:
        return Client(self.port)


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> tuple[Path, str, bytes]:
    data_dir = tmp_path_factory.mktemp("worker") / "data"
    data = f.photo_jpeg(400, 300, seed=5)
    imageid = ImageStore(Config(data_dir=data_dir)).save_image(data)
    return data_dir, imageid, data


@pytest.fixture(scope="module", params=[DEFAULT, LINGERING])
def server(request, library) -> Iterator[Gunicorn]:
    yield from _serve(library, request.param)


def _serve(library: tuple[Path, str, bytes], worker: str) -> Iterator[Gunicorn]:
    running = Gunicorn(library[0], worker, threads=2)
    running.start()
    yield running
    running.stop()
    log = running.log_path.read_text()
    assert "Traceback" not in log and "[ERROR]" not in log, log


@pytest.fixture(scope="module")
def lingering(library) -> Iterator[Gunicorn]:
    yield from _serve(library, LINGERING)


@pytest.fixture(scope="module")
def long_lingering(library) -> Iterator[Gunicorn]:
    yield from _serve(library, LONG_LINGERING)


def get(imageid: str, close: bool = False, size: str = "o") -> bytes:
    extra = "Connection: close\r\n" if close else ""
    return f"GET /{size}/{imageid}.jpeg HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


class Client:
    """One connection to the server, with the one buffered reader its responses are
    read from (an HTTPResponse per answer would buffer, and lose, pipelined bytes)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.send(data)

    def answer(self) -> tuple[int, bytes, bool]:
        """The next response: status, body, whether the server keeps the connection."""
        response = http.client.HTTPResponse(self)  # type: ignore[arg-type]
        response.begin()
        body = response.read()
        return response.status, body, not response.will_close

    def makefile(self, *args: Any, **kwargs: Any) -> SimpleNamespace:
        """For HTTPResponse: the connection's reader, which the response must not close."""
        file = self.file
        return SimpleNamespace(readline=file.readline, read=file.read,
                               readinto=file.readinto, close=lambda: None)

    def closed_by_server(self, within: float) -> bool:
        """Whether the server closes the connection within ``within`` seconds."""
        self.sock.settimeout(within)
        try:
            data = self.file.read(1)
        except TimeoutError:
            return False
        except ConnectionResetError:
            data = b""
        assert data == b"", f"unexpected bytes from the server: {data!r}"
        return True

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_a_kept_alive_connection_answers_request_after_request(server, library):
    _, imageid, data = library
    with server.connect() as sock:
        for _ in range(30):
            sock.send(get(imageid))
            status, body, kept = sock.answer()
            assert (status, body, kept) == (200, data, True)


def test_pipelined_requests_are_answered_in_order(server, library):
    _, imageid, data = library
    with server.connect() as sock:
        unknown = compute_id(b"no such image")
        sock.send(get(imageid) + get(unknown) + get(imageid, close=True))
        assert sock.answer()[:2] == (200, data)
        assert sock.answer()[0] == 404
        assert sock.answer() == (200, data, False)
        assert sock.closed_by_server(5)


def test_a_next_head_sent_in_pieces_within_the_linger_is_answered(lingering, library):
    """The thread reads the first piece and hands it to the event loop, which must keep it."""
    _, imageid, data = library
    with lingering.connect() as sock:
        sock.send(get(imageid))
        assert sock.answer()[:2] == (200, data)
        head = get(imageid)
        sock.send(head[:10])
        time.sleep(0.3)  # well within the linger: the thread has read those 10 bytes
        sock.send(head[10:25])
        time.sleep(0.3)  # now the event loop reads
        sock.send(head[25:])
        assert sock.answer() == (200, data, True)


def test_a_half_sent_next_head_holds_no_thread_and_is_closed_after_the_header_timeout(
    lingering, library
):
    _, imageid, data = library
    stalled = []
    for _ in range(4):  # twice as many as the worker has threads
        sock = lingering.connect()
        sock.send(get(imageid))
        assert sock.answer()[:2] == (200, data)
        sock.send(get(imageid)[:20])
        stalled.append(sock)
    with lingering.connect() as fresh:  # answered at once: no thread is held
        fresh.sock.settimeout(3.0)  # a held thread would be held for the 30 s I/O timeout
        fresh.send(get(imageid, close=True))
        assert fresh.answer()[:2] == (200, data)
    for sock in stalled:
        # header_timeout 1.5 s, checked once a second by the event loop, counted
        # from the moment the event loop took the piece (after the 1 s linger at most)
        assert sock.closed_by_server(within=6.0), "a half-sent head outlived the header timeout"
        sock.close()


def test_an_idle_connection_goes_back_to_the_event_loop_and_still_answers(lingering, library):
    _, imageid, data = library
    with lingering.connect() as sock:
        sock.send(get(imageid))
        assert sock.answer()[:2] == (200, data)
        time.sleep(1.5)  # past the linger: the event loop holds the connection
        sock.send(get(imageid))
        assert sock.answer() == (200, data, True)


def test_a_client_that_closes_within_the_linger_frees_its_thread(long_lingering, library):
    _, imageid, data = library
    for _ in range(4):  # twice as many as the worker has threads
        sock = long_lingering.connect()
        sock.send(get(imageid))
        assert sock.answer()[:2] == (200, data)
        sock.close()
    with long_lingering.connect() as fresh:
        fresh.sock.settimeout(2.5)  # each thread saw its client close, well within the 5 s
        fresh.send(get(imageid, close=True))
        assert fresh.answer()[:2] == (200, data)


def test_a_slow_answer_does_not_end_the_connection_s_next_request(long_lingering, library):
    """The body deadline of a request ends with it: a next head that arrives after an
    answer that took longer than the body timeout (a render waiting for a slot, here)
    is read, not taken for the client's end of the connection."""
    data_dir, imageid, data = library
    slots = RenderSlots(data_dir / "cache" / ".locks", slots=RENDER_SLOTS, wait=5)
    with long_lingering.connect() as sock:
        with slots.slot(), slots.slot():  # the whole node is rendering
            sock.send(get(imageid, size="120x90"))
            time.sleep(1.5)  # LingeringWorker.body_timeout is 1 s
        assert sock.answer()[0] == 200
        sock.send(get(imageid))  # at once: well within the 5 s linger
        assert sock.answer() == (200, data, True)
