"""Originals through lighttpd and Apache in front of ``huimages fcgi``: a JPEG/HTML
polyglot and a HEIC, uploaded with ``huimages put``, reach the browser byte for byte
with their own type and the inert headers the app sets, passed through untouched.

Only the first request (a miss, answered by the app through FastCGI) is this
module's concern: the headers of the web servers' own static answers for ``o/``
come from their configuration templates (tests/test_deployment.py renders them).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from .. import realfiles
from ..webservers import HUIMAGES, make_base_dir, remove_base_dir
from .test_deployment import HIT_CACHE_CONTROL, Originals, Stack, start_stack, stop_stack

pytestmark = pytest.mark.webserver

CSP = "sandbox; default-src 'none'"
STACKS = [
    pytest.param(("lighttpd", "socket", False), id="lighttpd-unix-threaded"),
    pytest.param(("apache", "tcp", False), id="apache-tcp-threaded"),
    pytest.param(("nginx", "socket", False), id="nginx-unix-threaded"),
    pytest.param(("nginx", "proxy", False), id="nginx-proxy-gunicorn"),
]


@pytest.fixture(scope="module")
def uploaded() -> Iterator[tuple[Originals, dict[str, tuple[str, bytes]]]]:
    base = make_base_dir()
    try:
        data_dir = base / "data"
        files = {"polyglot.jpg": realfiles.polyglot_jpeg(), "iphone.heic": realfiles.heic(800, 600)}
        ids = {}
        for name, data in files.items():
            (base / name).write_bytes(data)
            result = subprocess.run(
                [str(HUIMAGES), "--data-dir", str(data_dir), "put", str(base / name)],
                capture_output=True, text=True, timeout=60,
            )
            assert result.returncode == 0, result.stderr
            ids[name] = (result.stdout.strip(), data)
        yield Originals(base, data_dir, ids["polyglot.jpg"][0]), ids
    finally:
        remove_base_dir(base)


@pytest.fixture(scope="module", params=STACKS)
def stack(request, uploaded) -> Iterator[Stack]:
    originals, _ = uploaded
    kind, transport, forking = request.param
    s = start_stack(originals, f"originals-{kind}-{transport}", kind, transport, forking,
                    secret=None)
    yield s
    stop_stack(s)


ORIGINALS = (("polyglot.jpg", "image/jpeg", "jpeg"), ("iphone.heic", "image/heic", "heic"))


def test_an_original_is_served_inert_by_the_app_then_by_the_webserver(stack, uploaded):
    """The first request reaches the app, which caches o/; with the backend stopped,
    the webserver alone serves the same bytes, with the same type and the same guards."""
    for name, content_type, ext in ORIGINALS:
        imageid, data = uploaded[1][name]
        status, headers, body = stack.get(f"/o/{imageid}.{ext}")
        assert status == 200, (status, body[:200], stack.logs())
        assert body == data
        if name == "polyglot.jpg":
            assert realfiles.HTML_PAYLOAD in body
        assert headers["content-type"] == content_type
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["content-security-policy"] == CSP
        assert (stack.cache_dir / "o" / f"{imageid}.{ext}").read_bytes() == data
        status, headers, body = stack.get(f"/o/{imageid}.png")  # the wrong extension
        assert status == 301 and headers["location"].endswith(f"/o/{imageid}.{ext}"), (
            status, body)
    stack.backend.stop()
    for name, content_type, ext in ORIGINALS:
        imageid, data = uploaded[1][name]
        for path in (f"/o/{imageid}.{ext}", f"/o/{imageid}/holiday.{ext}"):
            status, headers, body = stack.get(path)
            assert (status, body == data) == (200, True), (path, status, stack.logs())
            assert headers["content-type"] == content_type, path
            assert headers["x-content-type-options"] == "nosniff", path
            assert headers["content-security-policy"] == CSP, path
            assert headers["cache-control"] == HIT_CACHE_CONTROL[stack.kind], path
