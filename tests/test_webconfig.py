"""Web server front ends: config rendering, and real lighttpd/Apache runs.

The integration tests start the real servers (``apt-get install lighttpd
apache2``) on free loopback ports in front of a FastCGI backend running
``APP`` (an import string: the seam for swapping the stand-in app
``tests/fake_image_app.py`` for the real one).  They never skip: a server
that cannot start fails the test with its log tail.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from huimages_wsgi import webconfig
from huimages_wsgi.fcgi import fix_path_info, serve_fcgi
from huimages_wsgi.webconfig import add_config_parser, render_config, run_config

from .webservers import (
    FcgiBackend,
    WebServer,
    free_port,
    http_get,
    make_base_dir,
    remove_base_dir,
)

APP = "tests.fake_image_app:app"
CACHE_ENV = "HUIMAGES_CACHE_DIR"  # how the fake app learns its cache dir

IMMUTABLE = "public, max-age=31536000, immutable"
ID1 = "B2345678901234567890123456789012CD"
ID2 = "C2345678901234567890123456789012CD"
ID3 = "D2345678901234567890123456789012CD"
ID4 = "E2345678901234567890123456789012CD"
UNKNOWN_ID = "AAAA5678901234567890123456789012CD"
assert all(len(i) == 34 for i in (ID1, ID2, ID3, ID4, UNKNOWN_ID))

KINDS = ("lighttpd", "apache")


# ------------------------------------------------------------------ unit


def render(kind, **kw):
    args = dict(cache_dir="/srv/cache", port=8080, run_dir="/srv/run")
    args.update(kw)
    if "fcgi_socket" not in args and "fcgi_bind" not in args:
        args["fcgi_socket"] = "/srv/run/app.sock"
    return render_config(kind, **args)


@pytest.mark.parametrize("kind", KINDS)
def test_every_placeholder_is_filled(kind):
    text = render(kind, user="nobody", group="nogroup")
    assert "${" not in text
    assert webconfig.placeholders(kind) == {
        "cache_dir",
        "run_dir",
        "port",
        "host",
        "user",
        "group",
        "fcgi_target",
    }
    assert '"/srv/cache"' in text
    assert "/srv/run/" in text
    assert "8080" in text
    assert "127.0.0.1" in text
    assert "nobody" in text and "nogroup" in text


def test_lighttpd_targets_and_literal_dollars():
    text = render("lighttpd", fcgi_socket="/srv/run/app.sock")
    assert '"socket" => "/srv/run/app.sock",' in text
    assert "server.port          = 8080" in text
    assert '$HTTP["url"]' in text and '"/$1/$2.$3$4"' in text
    assert '"x-sendfile-docroot" => ( "/srv/cache" )' in text
    text = render("lighttpd", fcgi_bind="127.0.0.1:9001", fcgi_socket=None)
    assert '"host" => "127.0.0.1", "port" => 9001,' in text
    assert '"socket" =>' not in text.split("\nfastcgi.server")[1]


def test_apache_targets_and_literal_dollars():
    text = render("apache", fcgi_socket="/srv/run/app.sock")
    assert 'RewriteRule "^/" "unix:/srv/run/app.sock|fcgi://localhost/" [P,L]' in text
    assert "Listen 127.0.0.1:8080" in text
    assert '"/$1/$2.$3" [L]' in text and "%{DOCUMENT_ROOT}" in text
    for mod in ("mpm_event", "authz_core", "mime", "rewrite", "headers", "proxy", "proxy_fcgi"):
        assert re.search(
            rf"^LoadModule {mod}_module +/usr/lib/apache2/modules/mod_{mod}\.so$", text, re.M
        ), mod
    assert "Include" not in text.replace("# ", "")  # standalone: no /etc/apache2 includes
    text = render("apache", fcgi_bind="[::1]:9001", host="::1")
    assert 'RewriteRule "^/" "fcgi://[::1]:9001/" [P,L]' in text
    assert "Listen [::1]:8080" in text


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = render("lighttpd", cache_dir="cache", run_dir="run", fcgi_socket="run/s.sock")
    assert f'server.document-root = "{tmp_path}/cache"' in text
    assert f'"socket" => "{tmp_path}/run/s.sock"' in text


def test_default_user_group():
    user, group = webconfig.default_user_group()
    if os.geteuid() == 0:
        assert (user, group) == ("www-data", "www-data")
    assert f"User {user}" in render("apache")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "nginx"}, "unknown web server kind"),
        ({"fcgi_socket": "/a.sock", "fcgi_bind": "127.0.0.1:9000"}, "exactly one"),
        ({"fcgi_socket": None}, "exactly one"),
        ({"fcgi_socket": None, "fcgi_bind": "localhost"}, "HOST:PORT"),
        ({"fcgi_socket": None, "fcgi_bind": "127.0.0.1:0"}, "between 1 and 65535"),
        ({"fcgi_socket": None, "fcgi_bind": "127.0.0.1:http"}, "HOST:PORT"),
        ({"port": 70000}, "between 1 and 65535"),
        ({"port": "eighty"}, "integer"),
        ({"cache_dir": ""}, "non-empty path"),
        ({"cache_dir": '/srv/"quoted"'}, "quotes"),
        ({"run_dir": "/srv/run\nInclude /etc/passwd"}, "control characters"),
        ({"fcgi_socket": "/srv/a|b.sock"}, "'|'"),
        ({"host": "127.0.0.1 evil"}, "host"),
        ({"user": "www data"}, "user"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    args = dict(
        kind="lighttpd",
        cache_dir="/srv/cache",
        port=8080,
        run_dir="/srv/run",
        fcgi_socket="/srv/run/app.sock",
    )
    if "fcgi_bind" in kwargs and "fcgi_socket" not in kwargs:
        args["fcgi_socket"] = None
    args.update(kwargs)
    with pytest.raises(ValueError, match=re.escape(message)):
        render_config(**args)


def test_cli_helpers(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="huimages")
    add_config_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "config",
            "apache",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--port",
            "8081",
            "--fcgi-bind",
            "127.0.0.1:9000",
        ]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "Listen 127.0.0.1:8081" in out
    assert f'PidFile "{tmp_path}/run/apache2.pid"' in out  # default run dir: next to the cache

    target = tmp_path / "l.conf"
    args = parser.parse_args(
        [
            "config",
            "lighttpd",
            "--cache-dir",
            "c",
            "--port",
            "8081",
            "--fcgi-socket",
            "/s.sock",
            "--run-dir",
            str(tmp_path / "r"),
            "-o",
            str(target),
        ]
    )
    assert run_config(args) == 0
    assert '"socket" => "/s.sock"' in target.read_text()

    args = parser.parse_args(
        ["config", "lighttpd", "--cache-dir", "c", "--port", "8081", "--fcgi-bind", "nope"]
    )
    assert run_config(args) == 2
    assert "HOST:PORT" in capsys.readouterr().err

    # the CLI's handler(args, config) convention: cache dir from the config
    args = parser.parse_args(["config", "lighttpd", "--port", "8081", "--fcgi-bind", "h:1"])
    assert run_config(args) == 2
    assert "--cache-dir is required" in capsys.readouterr().err
    config = argparse.Namespace(cache_dir=tmp_path / "data" / "cache")
    assert args.handler(args, config) == 0
    assert f'server.document-root = "{tmp_path}/data/cache"' in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse: the two targets are exclusive
        parser.parse_args(
            [
                "config",
                "lighttpd",
                "--cache-dir",
                "c",
                "--port",
                "1",
                "--fcgi-bind",
                "a:1",
                "--fcgi-socket",
                "/s",
            ]
        )


@pytest.mark.parametrize(
    ("environ", "path_info", "script_name"),
    [
        ({"PATH_INFO": "/o/X.jpeg", "REQUEST_URI": "/zzz"}, "/o/X.jpeg", None),
        ({"REQUEST_URI": "/75x75!/X/a%20b%C3%A9.jpeg?sig=1"}, "/75x75!/X/a b\xc3\xa9.jpeg", ""),
        # Apache mod_proxy_fcgi without ProxyFCGISetEnvIf: SCRIPT_NAME is the whole path
        ({"REQUEST_URI": "/o/X%20Y.jpeg", "SCRIPT_NAME": "/o/X Y.jpeg"}, "/o/X Y.jpeg", ""),
        # lighttpd's error handler URL is not a prefix of the client's URL
        ({"REQUEST_URI": "/o/X.jpeg", "SCRIPT_NAME": "/__huimages__"}, "/o/X.jpeg", ""),
        ({"REQUEST_URI": "/app/o/X.jpeg", "SCRIPT_NAME": "/app"}, "/o/X.jpeg", "/app"),
        ({"REQUEST_URI": "/application/o", "SCRIPT_NAME": "/app"}, "/application/o", ""),
        ({"REQUEST_URI": "http://h:1/o/X.jpeg?x"}, "/o/X.jpeg", ""),
        ({}, None, None),
    ],
)
def test_fix_path_info(environ, path_info, script_name):
    env = dict(environ)
    fix_path_info(env)
    assert env.get("PATH_INFO") == path_info
    assert env.get("SCRIPT_NAME") == script_name


def test_serve_fcgi_needs_one_address():
    with pytest.raises(ValueError):
        serve_fcgi(lambda e, s: [], socket_path=None, bind=None)
    with pytest.raises(ValueError):
        serve_fcgi(lambda e, s: [], socket_path="/tmp/x.sock", bind=("127.0.0.1", 1))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("transport", ["socket", "tcp"])
def test_rendered_config_passes_server_syntax_check(kind, transport):
    base = make_base_dir()
    try:
        kw = (
            {"fcgi_socket": str(base / "app.sock")}
            if transport == "socket"
            else {"fcgi_bind": "127.0.0.1:9"}
        )
        text = render_config(kind, str(base / "cache"), free_port(), str(base / "run"), **kw)
        (base / "cache").mkdir()
        WebServer(kind, text, base / "run", 1).check_syntax()
    finally:
        remove_base_dir(base)


# ----------------------------------------------------------- integration


@dataclass
class Stack:
    kind: str
    base: Path
    cache_dir: Path
    run_dir: Path
    backend: FcgiBackend
    server: WebServer

    def get(self, path, method="GET"):
        return http_get(self.server.port, path, method=method)


def start_stack(kind: str, transport: str = "socket", threaded: bool = True, app: str = APP):
    base = make_base_dir()
    cache_dir, run_dir = base / "cache", base / "run"
    cache_dir.mkdir(mode=0o755)
    run_dir.mkdir(mode=0o755)
    if os.geteuid() == 0:
        # lighttpd opens its logs after dropping to ${user}
        shutil.chown(run_dir, *webconfig.default_user_group())
    if transport == "socket":
        backend = FcgiBackend(
            app,
            socket_path=base / "fcgi.sock",
            threaded=threaded,
            env={CACHE_ENV: str(cache_dir)},
            log_path=run_dir / "fcgi.log",
        )
    else:
        backend = FcgiBackend(
            app,
            bind=("127.0.0.1", free_port()),
            threaded=threaded,
            env={CACHE_ENV: str(cache_dir)},
            log_path=run_dir / "fcgi.log",
        )
    server = None
    try:
        backend.start()
        port = free_port()
        text = render_config(
            kind,
            str(cache_dir),
            port,
            str(run_dir),
            fcgi_socket=backend.fcgi_socket,
            fcgi_bind=backend.fcgi_bind,
        )
        server = WebServer(kind, text, run_dir, port).start()
    except BaseException:
        backend.stop()
        if server is not None:
            server.stop()
        remove_base_dir(base)
        raise
    return Stack(kind, base, cache_dir, run_dir, backend, server)


def stop_stack(stack: Stack) -> None:
    try:
        if stack.backend.running:  # let both shut down in parallel
            stack.backend.proc.send_signal(signal.SIGTERM)
        stack.server.stop()
        stack.backend.stop()
    finally:
        remove_base_dir(stack.base)


STACK_PARAMS = [
    pytest.param(("lighttpd", "socket", True), id="lighttpd-unix-threaded"),
    pytest.param(("apache", "socket", True), id="apache-unix-threaded"),
    pytest.param(("lighttpd", "tcp", False), id="lighttpd-tcp-forking"),
    pytest.param(("apache", "tcp", True), id="apache-tcp-threaded"),
]


@pytest.fixture(params=STACK_PARAMS)
def stack(request):
    kind, transport, threaded = request.param
    s = start_stack(kind, transport, threaded)
    yield s
    stop_stack(s)


@pytest.fixture(params=KINDS)
def unix_stack(request):
    s = start_stack(request.param)
    yield s
    stop_stack(s)


def assert_static(headers, ctype="image/jpeg"):
    """Served by the web server from disk, not generated by the app."""
    assert "x-generated-by" not in headers, headers
    assert headers.get("cache-control") == IMMUTABLE, headers
    assert headers.get("content-type") == ctype, headers


def assert_from_app(headers):
    assert headers.get("x-generated-by") == "fake-image-app", headers
    assert "immutable" not in headers.get("cache-control", ""), headers


def test_miss_generates_then_webserver_serves_without_backend(stack):
    url = f"/75x75/{ID1}.jpeg"
    status, headers, body = stack.get(url)
    assert status == 200, (status, body, stack.server.logs())
    assert_from_app(headers)
    assert headers["content-type"] == "image/jpeg"
    assert body.startswith(b"FAKE-JPEG 75x75/" + ID1.encode())
    cached = stack.cache_dir / "75x75" / f"{ID1}.jpeg"
    assert cached.read_bytes() == body

    stack.backend.stop()
    for path in (url, f"/75x75/{ID1}/a-nice-seo-name.jpeg", f"{url}?sig=ignored"):
        status, headers, again = stack.get(path)
        assert status == 200, (path, status, again)
        assert again == body, path
        assert_static(headers)
    status, _, _ = stack.get("/75x75/{ID1}.jpeg".replace("{ID1}", ID1), method="HEAD")
    assert status == 200

    # a miss with the backend down is the web server's own error, not a hang:
    # Apache says 503; lighttpd falls back to the original 404 when its
    # error handler (the backend) fails
    status, headers, _ = stack.get(f"/75x75/{ID2}.jpeg")
    assert status == (404 if stack.kind == "lighttpd" else 503), status
    assert "x-generated-by" not in headers

    stack.backend.start()
    # lighttpd keeps a failed backend disabled for "disable-time" (1 s)
    deadline = time.monotonic() + 10
    while True:
        status, headers, body2 = stack.get(f"/75x75/{ID2}.jpeg")
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 200
    assert_from_app(headers)
    assert (stack.cache_dir / "75x75" / f"{ID2}.jpeg").read_bytes() == body2


def test_seo_url_on_miss_then_cached(stack):
    seo = f"/200x100!/{ID3}/Sunset%20at%20the%20beach.jpeg?sig=abc"
    status, headers, body = stack.get(seo)
    assert status == 200, (status, body)
    assert_from_app(headers)
    # the app got the original URL (SEO name included), decoded, and the query
    assert headers["x-fake-path"] == f"/200x100!/{ID3}/Sunset at the beach.jpeg"
    assert headers["x-fake-query"] == "sig=abc"
    assert (stack.cache_dir / "200x100!" / f"{ID3}.jpeg").read_bytes() == body

    for path in (seo, f"/200x100!/{ID3}/other-name.jpeg", f"/200x100!/{ID3}.jpeg"):
        status, headers, again = stack.get(path)
        assert status == 200, path
        assert again == body, path
        assert_static(headers)


def test_other_extensions_content_type(unix_stack):
    for ext, ctype in (("webp", "image/webp"), ("avif", "image/avif"), ("png", "image/png")):
        status, headers, body = unix_stack.get(f"/o/{ID4}.{ext}")
        assert status == 200, ext
        assert headers["content-type"] == ctype
        assert_from_app(headers)
        status, headers, again = unix_stack.get(f"/o/{ID4}/seo-name.{ext}")
        assert (status, again) == (200, body)
        assert_static(headers, ctype)


def test_unknown_id_is_404_from_the_app(stack):
    status, headers, body = stack.get(f"/75x75/{UNKNOWN_ID}.jpeg")
    assert status == 404
    assert body == b"fake-app: unknown image id\n"
    assert_from_app(headers)
    status, headers, body = stack.get(f"/75x75/{UNKNOWN_ID}/seo.jpeg")
    assert status == 404
    assert body == b"fake-app: unknown image id\n"
    assert not (stack.cache_dir / "75x75" / f"{UNKNOWN_ID}.jpeg").exists()


def test_bad_size_400_and_bad_signature_403_pass_through(stack):
    status, headers, body = stack.get(f"/12xx/{ID1}.jpeg")
    assert status == 400, (status, body)
    assert body == b"fake-app: bad size\n"
    assert_from_app(headers)
    status, headers, body = stack.get(f"/75x75/{ID1}.jpeg?sig=bad")
    assert status == 403
    assert body == b"fake-app: bad signature\n"
    assert_from_app(headers)


def test_query_string_reaches_app_on_miss(stack):
    status, headers, _ = stack.get(f"/75x75!/{ID2}.jpeg?sig=abc")
    assert status == 200
    assert headers["x-fake-query"] == "sig=abc"
    assert headers["x-fake-path"] == f"/75x75!/{ID2}.jpeg"


def test_dotfiles_are_never_served(unix_stack):
    secret = b"temporary or lock file\n"
    (unix_stack.cache_dir / "75x75").mkdir()
    for rel in ("75x75/.lock", f"75x75/.tmp-{ID1}.jpeg", ".hidden", "75x75/.x.jpeg"):
        (unix_stack.cache_dir / rel).write_bytes(secret)
        (unix_stack.cache_dir / rel).chmod(0o644)
    (unix_stack.cache_dir / ".dir").mkdir()
    (unix_stack.cache_dir / ".dir" / f"{ID1}.jpeg").write_bytes(secret)
    for path in (
        "/75x75/.lock",
        f"/75x75/.tmp-{ID1}.jpeg",
        "/.hidden",
        "/75x75/.x.jpeg",
        f"/.dir/{ID1}.jpeg",
        "/75x75/%2elock",
        "/75x75/x/../.lock",
    ):
        status, _, body = unix_stack.get(path)
        assert status in (403, 404), (path, status)
        assert secret not in body, path


def test_environment_seen_by_the_app(unix_stack):
    """What each server passes; printed for the record (pytest -s)."""
    status, _, body = unix_stack.get("/__env__/a%20b/c.jpeg?x=1&sig=abc")
    assert status == 200
    env = json.loads(body)
    print(f"\n{unix_stack.kind} FastCGI environ: {json.dumps(env, indent=1)}")
    assert env["resolved_path"] == "/__env__/a b/c.jpeg"
    assert env["PATH_INFO"] == "/__env__/a b/c.jpeg"
    assert env["SCRIPT_NAME"] == ""
    assert env["REQUEST_URI"] == "/__env__/a%20b/c.jpeg?x=1&sig=abc"
    assert env["QUERY_STRING"] == "x=1&sig=abc"


def test_lighttpd_x_sendfile():
    s = start_stack("lighttpd")
    try:
        status, headers, body = s.get(f"/75x75/{ID4}.jpeg?xsendfile=1")
        assert status == 200, (status, body, s.server.logs())
        assert "x-sendfile" not in headers
        assert body == (s.cache_dir / "75x75" / f"{ID4}.jpeg").read_bytes()
        assert body.startswith(b"FAKE-JPEG")
    finally:
        stop_stack(s)
