"""Rendering the nginx configuration: its backends, its checks, and nginx's own syntax test.

tests/system/test_deployment.py runs the rendered file for real (``nginx -c FILE -g
'daemon off;'``) in front of ``huimages fcgi`` and ``huimages serve``; here
each variant also passes ``nginx -t``, and contrib/nginx/huimages.conf is
checked to be exactly what its header's command renders.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from huimages_wsgi.deploy import webconfig
from huimages_wsgi.deploy.webconfig import parse_proxy_url, render_config

from ..webservers import WebServer, free_port, make_base_dir, remove_base_dir

REPO = Path(__file__).resolve().parents[2]


def render(**kw):
    args = dict(cache_dir="/srv/cache", port=8080, run_dir="/srv/run", user="nobody",
                group="nogroup")
    args.update(kw)
    if not {"fcgi_socket", "fcgi_bind", "proxy"} & set(kw):
        args["fcgi_socket"] = "/srv/run/app.sock"
    return render_config("nginx", **args)


def test_fcgi_socket_backend():
    text = render()
    assert 'server "unix:/srv/run/app.sock";' in text
    assert "fastcgi_pass huimages_backend;" in text
    assert "fastcgi_param REQUEST_URI       $request_uri;" in text
    assert "fastcgi_param QUERY_STRING      $query_string;" in text
    assert 'fastcgi_param SCRIPT_NAME       "";' in text
    assert "proxy_pass" not in text and "proxy_set_header" not in text
    assert 'root "/srv/cache";' in text and "listen 127.0.0.1:8080;" in text
    assert "user nobody nogroup;" in text
    assert 'pid "/srv/run/nginx.pid";' in text
    assert "daemon" not in text.replace("'daemon off;'", "")  # -g 'daemon off;' must not clash


def test_fcgi_tcp_and_proxy_backends():
    text = render(fcgi_bind="[::1]:9001", host="::1")
    assert 'server "[::1]:9001";' in text and "listen [::1]:8080;" in text
    text = render(proxy="http://127.0.0.1:8081/")
    assert 'server "127.0.0.1:8081";' in text
    assert "proxy_pass http://huimages_backend$request_uri;" in text
    assert "fastcgi_pass" not in text and "fastcgi_param" not in text
    text = render(proxy="unix:/srv/run/gunicorn.sock")
    assert 'server "unix:/srv/run/gunicorn.sock";' in text


def test_xaccel_prefix_and_upload_size():
    text = render(xaccel_prefix="/internal-cache/", max_body_bytes=10 << 20)
    assert "location ^~ /internal-cache/ {" in text
    assert "location ^~ /internal-cache/o/ {" in text
    assert "client_max_body_size 11m;" in text


def test_every_placeholder_is_filled():
    assert webconfig.placeholders("nginx") == {
        "cache_dir", "run_dir", "port", "host", "user", "group", "backend_address",
        "xaccel_prefix", "max_body_size", "surrogate_headers", "auto_format", "command",
    }
    for kw in ({}, {"proxy": "http://127.0.0.1:1"}):
        text = render(**kw)
        assert "${" not in text and "##" not in text


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("http://127.0.0.1:8080", "127.0.0.1:8080"),
        ("http://localhost:8080/", "localhost:8080"),
        ("http://[::1]:8080", "[::1]:8080"),
        ("http://127.0.0.1", "127.0.0.1:80"),
        ("unix:/run/app.sock", "unix:/run/app.sock"),
    ],
)
def test_parse_proxy_url(value, address):
    assert parse_proxy_url(value) == address


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"proxy": "https://127.0.0.1:8080"}, "http://HOST:PORT"),
        ({"proxy": "http://127.0.0.1:8080/img"}, "the app at the root"),
        ({"proxy": "http://127.0.0.1:8080/?x=1"}, "http://HOST:PORT"),
        ({"proxy": "http://127.0.0.1:99999"}, "between 1 and 65535"),
        ({"proxy": "127.0.0.1:8080"}, "http://HOST:PORT"),
        ({"proxy": ""}, "proxy must be a URL"),
        ({"proxy": "http://127.0.0.1:1", "fcgi_socket": "/a.sock"}, "exactly one"),
        ({"cache_dir": "/srv/$cache"}, "'$'"),
        ({"xaccel_prefix": "/a b"}, "xaccel_prefix"),
        ({"xaccel_prefix": "huimages-cache"}, "xaccel_prefix"),
        ({"xaccel_prefix": "/../x"}, "xaccel_prefix"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        render(**kwargs)


@pytest.mark.webserver  # runs the server binary's own syntax check
@pytest.mark.parametrize("backend", ["socket", "tcp", "proxy"])
def test_rendered_config_passes_nginx_syntax_check(backend):
    base = make_base_dir()
    try:
        kw = {
            "socket": {"fcgi_socket": str(base / "app.sock")},
            "tcp": {"fcgi_bind": "127.0.0.1:9"},
            "proxy": {"proxy": "http://127.0.0.1:9"},
        }[backend]
        text = render_config("nginx", str(base / "cache"), free_port(), str(base / "run"), **kw)
        (base / "cache").mkdir()
        WebServer("nginx", text, base / "run", 1).check_syntax()
    finally:
        remove_base_dir(base)


def test_contrib_example_is_what_its_command_renders():
    shipped = (REPO / "contrib" / "nginx" / "huimages.conf").read_text()
    assert shipped == render_config(
        "nginx", cache_dir="/srv/huimages/cache", port=8080, run_dir="/srv/huimages/run",
        fcgi_socket="/srv/huimages/run/app.sock", user="www-data", group="www-data",
    )
    assert "huimages config nginx --cache-dir /srv/huimages/cache" in shipped.splitlines()[1]
