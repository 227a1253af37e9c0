"""A FastCGI client of a few lines, for talking to ``huimages fcgi`` on its unix socket
without a webserver (flup's own client takes only TCP addresses on Python 3)."""

from __future__ import annotations

import socket
import struct

VERSION, BEGIN, END, PARAMS, STDIN, STDOUT, RESPONDER = 1, 1, 3, 4, 5, 6, 1


def _record(kind: int, content: bytes, request_id: int = 1) -> bytes:
    return struct.pack(">BBHHBx", VERSION, kind, request_id, len(content), 0) + content


def _pair(name: bytes, value: bytes) -> bytes:
    def length(data: bytes) -> bytes:
        return bytes([len(data)]) if len(data) < 128 else struct.pack(">I", len(data) | 1 << 31)

    return length(name) + length(value) + name + value


def _exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("the FastCGI server closed the connection")
        data += chunk
    return data


def fcgi_get(socket_path: str, path: str) -> tuple[int, bytes]:
    """``GET path`` over FastCGI: (status, body)."""
    params = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path,
              "REQUEST_URI": path, "QUERY_STRING": "", "SERVER_NAME": "localhost",
              "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "CONTENT_LENGTH": "0"}
    encoded = b"".join(_pair(k.encode(), v.encode()) for k, v in params.items())
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(60)
        sock.connect(socket_path)
        sock.sendall(_record(BEGIN, struct.pack(">HB5x", RESPONDER, 0)) + _record(PARAMS, encoded)
                     + _record(PARAMS, b"") + _record(STDIN, b""))
        out = b""
        while True:
            _, kind, _, length, padding = struct.unpack(">BBHHBx", _exactly(sock, 8))
            content = _exactly(sock, length + padding)[:length]
            if kind == STDOUT:
                out += content
            elif kind == END:
                break
    head, _, body = out.partition(b"\r\n\r\n")
    status = 200
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"status:"):
            status = int(line.split()[1])
    return status, body
