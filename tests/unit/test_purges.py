"""Purges owed to the shared caches (node/purges.py), against a real HTTP server on
127.0.0.1 that records what it is asked and answers as told."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from huimages_wsgi import Config
from huimages_wsgi.deploy.webconfig import render_config
from huimages_wsgi.node.purges import SharedPurges, Target

pytestmark = pytest.mark.fast

IMAGE = "A" * 32 + "01"


class Recorder(http.server.ThreadingHTTPServer):
    """Answers every request with the next status of ``statuses`` (then 200)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.seen.append((self.command, self.path, dict(self.headers), body))
                self.send_response(server.statuses.pop(0) if server.statuses else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_PURGE = do_BAN = do_POST = answer

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def purges(tmp_path, *targets: str, clock=None, token=None) -> SharedPurges:
    config = Config(data_dir=tmp_path / "data", purge=targets, purge_token=token)
    return SharedPurges(config, tmp_path / "purges.sqlite3", clock or Clock())


def test_each_kind_of_target_gets_its_request(tmp_path, recorder):
    token = "a-purge-token-0123456789"
    owed = purges(tmp_path, f"xkey+http://{recorder.address}", f"ban+http://{recorder.address}",
                  f"http://{recorder.address}/purge/{{key}}?a=b+c", token=token)
    owed.add(IMAGE)
    owed.add(IMAGE)  # owed once, however often added
    assert owed.pending() == 3
    assert owed.send_due() == 3 and owed.pending() == 0
    seen = {method: (path, headers, body) for method, path, headers, body in recorder.seen}
    assert seen["PURGE"][:1] == ("/",) and seen["PURGE"][1]["xkey-purge"] == IMAGE
    assert seen["BAN"][:1] == ("/",) and seen["BAN"][1]["xkey-purge"] == IMAGE
    path, headers, body = seen["POST"]
    assert path == f"/purge/{IMAGE}?a=b+c"
    assert headers["Authorization"] == f"Bearer {token}"
    assert json.loads(body) == {"surrogate_keys": [IMAGE]}
    assert "Authorization" not in seen["PURGE"][1]  # the token goes to webhooks only
    owed.close()


def test_a_cache_that_fails_rests_then_is_asked_again(tmp_path, recorder):
    clock = Clock()
    owed = purges(tmp_path, f"xkey+http://{recorder.address}", clock=clock)
    recorder.statuses = [503, 500]
    owed.add(IMAGE)
    owed.add("B" * 32 + "01")
    assert owed.send_due() == 0 and owed.failed_total == 1
    assert len(recorder.seen) == 1  # the cache rests with all its purges after a failure
    assert owed.send_due() == 0 and len(recorder.seen) == 1
    clock.now += 1.5
    assert owed.send_due() == 0 and owed.failed_total == 2  # the 500: a rest of 2 s now
    clock.now += 1.5
    assert owed.send_due() == 0 and len(recorder.seen) == 2
    clock.now += 1
    assert owed.send_due() == 2 and owed.pending() == 0 and owed.sent_total == 2
    owed.close()


def test_a_failure_of_any_kind_is_counted_never_raised(tmp_path, monkeypatch):
    owed = purges(tmp_path, "xkey+http://127.0.0.1:9")

    def odd(self, imageid):
        raise ValueError("a bug in a purge")

    monkeypatch.setattr(Target, "send", odd)
    owed.add(IMAGE)
    assert owed.send_due() == 0 and owed.failed_total == 1 and owed.pending() == 1
    owed.close()


def test_owed_purges_survive_a_restart_and_a_damaged_file_is_set_aside(tmp_path, recorder,
                                                                       caplog):
    target = f"xkey+http://{recorder.address}"
    first = purges(tmp_path, target)
    first.add(IMAGE)
    first.close()
    again = purges(tmp_path, target)
    assert again.pending() == 1 and again.send_due() == 1
    again.close()
    (tmp_path / "purges.sqlite3").write_bytes(b"not a database" * 100)
    damaged = purges(tmp_path, target)
    damaged.add(IMAGE)  # set aside, started afresh
    damaged.add(IMAGE)
    assert damaged.pending() == 1 and "damaged" in caplog.text
    assert list(tmp_path.glob("purges.sqlite3.damaged-*"))
    damaged.close()


def test_the_sender_thread_sends_what_is_added(tmp_path, recorder):
    owed = purges(tmp_path, f"xkey+http://{recorder.address}")
    owed.start()
    try:
        owed.add(IMAGE)
        done = threading.Event()
        for _ in range(100):
            if owed.pending() == 0:
                done.set()
                break
            threading.Event().wait(0.05)
        assert done.is_set() and recorder.seen[0][0] == "PURGE"
    finally:
        owed.close()


@pytest.mark.parametrize("target", ["xkey+http://host:abc", "ban+http://", "ftp://x/",
                                    "xkey+http://ho st:80", "http://host:80/\u00e9"])
def test_targets_that_cannot_work_are_refused_at_start_up(tmp_path, target):
    with pytest.raises(ValueError, match="purge"):
        Config(data_dir=tmp_path, purge=(target,))


def test_a_webhook_with_a_plus_is_a_webhook():
    target = Target("https://api.example.com/purge?x=a+b")
    assert target.kind == "webhook" and target.url.hostname == "api.example.com"


@pytest.mark.parametrize("token", ["short", "sixteen chars..." + " x", "a" * 20 + "\r\nX: y"])
def test_a_weak_or_broken_purge_token_is_refused(tmp_path, token):
    with pytest.raises(ValueError, match="HUIMAGES_PURGE_TOKEN"):
        Config(data_dir=tmp_path, purge_token=token)


@pytest.mark.parametrize("name", ["Cache-Control", "content-length", "Link", "X y", "a:b", "$x"])
def test_a_surrogate_header_never_takes_an_answers_own_name(tmp_path, name):
    with pytest.raises(ValueError, match="surrogate"):
        Config(data_dir=tmp_path, surrogate_headers=(name,))
    with pytest.raises(ValueError, match="surrogate"):
        render_config("nginx", "/srv/c", 8080, "/srv/r", fcgi_socket="/srv/r/s",
                      surrogate_headers=(name,))
