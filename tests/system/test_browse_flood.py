"""A flood of unauthenticated posts at the browse page of a real ``huimages serve``.

24 clients at once each declare a 50 MB body and start sending it. Who is
asking is decided before the body is read, so each gets its refusal at once
and the server process never holds their bodies: its peak resident memory
(``VmHWM`` of every process of the server) stays under 200 MB. Before the
check came first, the form read and parsed each body whole: 1.4 GB.
"""

from __future__ import annotations

import re
import select
import socket
import threading
from pathlib import Path

import pytest

from ..conftest import LiveServer

CLIENTS = 24
DECLARED = 50 << 20
PEAK_LIMIT_KB = 200 << 10
TOKEN = "flood-token-0123456789abcdef"
CHUNK = b"\0" * (1 << 16)


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += process_tree(int(child))
    return found


def name(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def peak_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1))


def post_declaring_50_mb(port: int, path: str, headers: dict[str, str]) -> int:
    """Send the head and as much of the body as the server takes until it answers;
    the answer's status (0: the connection ended without one)."""
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}",
            "Content-Type: multipart/form-data; boundary=flood",
            f"Content-Length: {DECLARED}", *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        sent = 0
        while sent < DECLARED:
            readable, writable, _ = select.select([sock], [sock], [], 60)
            if readable:
                break  # the answer came before the body: stop sending
            if not writable:
                return 0
            try:
                sent += sock.send(CHUNK[: DECLARED - sent])
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = b""
        try:
            while b"\r\n" not in answer:
                data = sock.recv(4096)
                if not data:
                    break
                answer += data
        except ConnectionResetError:
            pass
    match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    return int(match.group(1)) if match else 0


@pytest.mark.parametrize("env, posts", [
    ({"HUIMAGES_UPLOAD_TOKEN": TOKEN},  # no token sent: 401 unread; the token form: 413
     [("/_browse/upload", {}, 401), ("/_browse/login", {}, 413)]),
    ({},  # no token set: only local clients, and a proxied client is not one
     [("/_browse/upload", {"X-Forwarded-For": "192.0.2.7"}, 403),
      ("/_browse/login", {"X-Forwarded-For": "192.0.2.7"}, 403)]),
], ids=["token-set", "local-only"])
def test_unauthenticated_50_mb_posts_keep_the_server_small(tmp_path, env, posts):
    server = LiveServer(tmp_path / "data", {"HUIMAGES_BROWSE": "1", **env}, workers=1).start()
    try:
        statuses: list[tuple[int, int]] = []

        def client(number: int) -> None:
            path, headers, expected = posts[number % len(posts)]
            statuses.append((expected, post_declaring_50_mb(server.port, path, headers)))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert len(statuses) == CLIENTS
        assert all(expected == status for expected, status in statuses), statuses
        peaks = {f"{pid} {name(pid)}": peak_kb(pid) for pid in process_tree(server.process.pid)}
        print(f"VmHWM per server process (kB): {peaks}")
        assert len(peaks) >= 2  # the main process and its worker at least
        assert max(peaks.values()) < PEAK_LIMIT_KB, peaks
    finally:
        server.stop()
