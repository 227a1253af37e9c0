"""Rendering the lighttpd/Apache configs, and the FastCGI runner's pieces.

Every rendered config is also checked by the real server's own syntax test
(``lighttpd -tt``, ``apache2 -t``); tests/system/test_deployment.py runs them for
real in front of ``huimages fcgi``.
"""

from __future__ import annotations

import argparse
import os
import re

import pytest

from huimages_wsgi.cli.webconfig import add_config_parser, run_config
from huimages_wsgi.deploy import webconfig
from huimages_wsgi.deploy.fcgi import fix_path_info, request_uri_paths, serve_fcgi
from huimages_wsgi.deploy.webconfig import render_config

from ..webservers import WebServer, free_port, make_base_dir, remove_base_dir

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
        "command",
    } | ({"surrogate_headers"} if kind == "apache" else set()) | {"auto_format"}
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
    assert '"/$1/$2.$3" [L,E=HUIMAGES_CANONICAL:/$1/$2.$3]' in text
    assert "%{DOCUMENT_ROOT}" in text
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
        ({"kind": "iis"}, "unknown web server kind"),
        ({"proxy": "http://127.0.0.1:8080"}, "exactly one"),
        ({"fcgi_socket": None, "proxy": "http://127.0.0.1:8080"}, "nginx only"),
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


def test_cli_helpers(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `huimages config` creates the relative cache dir "c"
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


def _flup_guess(environ):
    """What flup documents doing before the app runs: an empty PATH_INFO becomes
    REQUEST_URI's raw path less as many characters as SCRIPT_NAME has."""
    environ.setdefault("SCRIPT_NAME", "")
    if not environ.get("PATH_INFO"):
        raw = environ.get("REQUEST_URI", "").split("?", 1)[0]
        environ["PATH_INFO"] = raw[len(environ["SCRIPT_NAME"]):]
    return environ


@pytest.mark.parametrize(
    ("environ", "path_info", "script_name"),
    [
        ({"PATH_INFO": "/o/X.jpeg", "REQUEST_URI": "/zzz"}, "/o/X.jpeg", ""),
        # sent decoded by the web server (Apache's ProxyFCGISetEnvIf): left alone
        ({"PATH_INFO": "/o/X Y.jpeg", "REQUEST_URI": "/o/X%20Y.jpeg"}, "/o/X Y.jpeg", ""),
        ({"REQUEST_URI": "/75x75!/X/a%20b%C3%A9.jpeg?sig=1"}, "/75x75!/X/a b\xc3\xa9.jpeg", ""),
        ({"REQUEST_URI": "/o/X%20Y.jpeg", "SCRIPT_NAME": "/o/X Y.jpeg"}, "/o/X Y.jpeg", ""),
        ({"REQUEST_URI": "/o/X.jpeg", "SCRIPT_NAME": "/__huimages__"}, "/o/X.jpeg", ""),
        ({"REQUEST_URI": "/app/o/X%21.jpeg", "SCRIPT_NAME": "/app"}, "/o/X!.jpeg", "/app"),
        ({"REQUEST_URI": "/application/o", "SCRIPT_NAME": "/app"}, "/application/o", ""),
    ],
)
def test_request_uri_paths_replaces_flups_guess(environ, path_info, script_name):
    seen = {}

    def app(environ, start_response):
        seen.update(environ)
        return [b""]

    request_uri_paths(app)(_flup_guess(dict(environ)), None)
    assert (seen["PATH_INFO"], seen["SCRIPT_NAME"]) == (path_info, script_name)


def test_serve_fcgi_needs_one_address():
    with pytest.raises(ValueError):
        serve_fcgi(lambda e, s: [], socket_path=None, bind=None)
    with pytest.raises(ValueError):
        serve_fcgi(lambda e, s: [], socket_path="/tmp/x.sock", bind=("127.0.0.1", 1))
    with pytest.raises(ValueError):
        serve_fcgi(lambda e, s: [], socket_path="/tmp/x.sock", processes=0)


@pytest.mark.webserver  # runs the server binary's own syntax check
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
