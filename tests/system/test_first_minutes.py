"""The first ten minutes of a new operator, without stumbles (issue 14).

Each test runs what an operator runs: the INSTALLED ``huimages`` command in a
subprocess (stdout and stderr as a terminal would show them), or the
standalone app from ``make_app``.

- ``huimages config lighttpd|apache|nginx`` makes the run directory the
  configuration names (owned by the server's user when run as root), or says
  exactly what to run when it cannot;
- ``/`` of the app sends a visitor to the browse page, or says what it is;
- a rendered configuration reads as written for this machine: no template
  notes, a header naming the command (which renders the same file again);
- ``huimages put`` of a 100-megapixel JPEG prints one clear line, not
  Pillow's raw DecompressionBombWarning first.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
from PIL import Image
from webob import Request

from huimages_wsgi import Config, make_app
from huimages_wsgi.deploy import webconfig

from .. import imagefactory
from ..webservers import HUIMAGES, WebServer, free_port, make_base_dir, remove_base_dir

KINDS = ("lighttpd", "apache", "nginx")
BACKENDS = {
    "lighttpd": ["--fcgi-socket", "/srv/huimages/run/app.sock"],
    "apache": ["--fcgi-bind", "127.0.0.1:9000"],
    "nginx": ["--proxy", "http://127.0.0.1:8080"],
}


def huimages(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(HUIMAGES), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def base():
    path = make_base_dir()
    yield path
    remove_base_dir(path)


# ------------------------------------------------------- a. the run directory


@pytest.mark.parametrize("kind", KINDS)
def test_config_creates_the_run_directory_and_the_server_starts(base: Path, kind: str):
    """No mkdir before: the printed configuration starts as is."""
    run_dir, port = base / "deep" / "run", free_port()
    result = huimages("config", kind, "--cache-dir", str(base / "cache"), "--port", str(port),
                      "--run-dir", str(run_dir), "--fcgi-bind", "127.0.0.1:9")
    assert result.returncode == 0, result.stderr
    assert run_dir.is_dir()
    assert run_dir.stat().st_mode & 0o777 == 0o755
    # the cache dir too: Apache refuses a DocumentRoot that does not exist
    assert (base / "cache").is_dir() and (base / "cache").stat().st_uid == os.geteuid()
    created_cache = f"huimages config: created the cache directory {base / 'cache'}\n"
    # lighttpd's answer while the app is unreachable (its error handler sends this file)
    page = (f"huimages config: wrote {run_dir / 'unavailable.txt'} (lighttpd's answer while"
            " the app is unreachable)\n") if kind == "lighttpd" else ""
    if os.geteuid() == 0:
        owner = webconfig.default_user_group()
        assert (run_dir.owner(), run_dir.group()) == owner
        assert result.stderr == created_cache + (
            f"huimages config: created the run directory {run_dir} (owner {owner[0]}:{owner[1]})\n"
        ) + page
    else:
        assert result.stderr == created_cache + (
            f"huimages config: created the run directory {run_dir}\n"
        ) + page
    # the web server comes up from the printed file alone (the backend is not needed for that)
    server = WebServer(kind, result.stdout, run_dir, port)
    try:
        server.start()
        assert server.running, server.logs()
    finally:
        server.stop()

    again = huimages("config", kind, "--cache-dir", str(base / "cache"), "--port", str(port),
                     "--run-dir", str(run_dir), "--fcgi-bind", "127.0.0.1:9")
    assert (again.returncode, again.stderr, again.stdout) == (0, "", result.stdout)


def test_config_says_what_to_run_when_it_cannot_create_the_run_directory(base: Path):
    (base / "a-file").write_text("not a directory\n")
    (base / "cache").mkdir()
    run_dir = base / "a-file" / "run"
    result = huimages("config", "lighttpd", "--cache-dir", str(base / "cache"), "--port", "8080",
                      "--run-dir", str(run_dir), "--fcgi-bind", "127.0.0.1:9000")
    assert result.returncode == 0  # the configuration itself is fine: printed all the same
    assert result.stdout.startswith("# lighttpd configuration for huimages-wsgi")
    lines = result.stderr.splitlines()
    assert lines[0] == (
        f"huimages config: cannot create the run directory {run_dir} (Not a directory); "
        "create it with:"
    )
    owner = " -o www-data -g www-data" if os.geteuid() == 0 else ""
    assert lines[1:] == [f"  install -d -m 0755{owner} {run_dir}"]


def test_config_cannot_create_the_cache_dir_says_what_to_run(base: Path):
    (base / "a-file").write_text("not a directory\n")
    cache = base / "a-file" / "cache"
    result = huimages("config", "apache", "--cache-dir", str(cache), "--port", "8080",
                      "--run-dir", str(base / "run"), "--fcgi-bind", "127.0.0.1:9000")
    assert result.returncode == 0 and result.stdout.startswith("# Apache httpd configuration")
    assert result.stderr.splitlines()[:2] == [
        f"huimages config: cannot create the cache directory {cache} (Not a directory); "
        "create it with:",
        f"  install -d -m 0755 {cache}",
    ]


def test_config_user_option_owns_the_new_run_directory(base: Path):
    if os.geteuid() != 0:
        # not root: nobody can give a directory away; it is the caller's
        result = huimages("config", "nginx", "--cache-dir", str(base / "c"), "--port", "8080",
                          "--run-dir", str(base / "run"), "--proxy", "http://127.0.0.1:1")
        assert result.returncode == 0, result.stderr
        assert (base / "run").stat().st_uid == os.geteuid()
        return
    result = huimages("config", "nginx", "--cache-dir", str(base / "c"), "--port", "8080",
                      "--run-dir", str(base / "run"), "--proxy", "http://127.0.0.1:1",
                      "--user", "nobody", "--group", "nogroup")
    assert result.returncode == 0, result.stderr
    assert ((base / "run").owner(), (base / "run").group()) == ("nobody", "nogroup")
    assert "user nobody nogroup;" in result.stdout


# ------------------------------------------------------------------- b. "/"


def test_root_redirects_to_the_browse_page_when_it_is_on(tmp_path: Path):
    app = make_app(Config(data_dir=tmp_path / "data", browse=True))
    response = Request.blank("/").get_response(app)
    assert response.status_int == 302
    assert response.location.endswith("/_browse/")
    local = {"REMOTE_ADDR": "127.0.0.1"}  # the browse page is for local clients here
    assert Request.blank(response.location, environ=local).get_response(app).status_int == 200
    # mounted below a prefix, the redirect stays below it
    request = Request.blank("/", environ={"SCRIPT_NAME": "/images", "PATH_INFO": "/"})
    assert request.get_response(app).location.endswith("/images/_browse/")


def test_root_says_what_the_server_is_when_browse_is_off(tmp_path: Path):
    from huimages_wsgi import __version__

    app = make_app(Config(data_dir=tmp_path / "data", browse=False,
                          server_url="https://img.example.test/"))
    response = Request.blank("/").get_response(app)
    assert response.status_int == 200
    assert response.content_type == "text/plain" and response.cache_control.no_store
    text = response.text
    assert text.startswith(f"huimages-wsgi {__version__}: ")
    assert "https://img.example.test/<size>/<ID>.<ext>" in text
    assert "HUIMAGES_BROWSE" in text
    assert len(text.splitlines()) <= 4
    assert str(tmp_path) not in text  # nothing about the machine
    head = Request.blank("/", method="HEAD").get_response(app)
    assert head.status_int == 200 and head.body == b""
    post = Request.blank("/", method="POST").get_response(app)
    assert post.status_int == 405 and post.allow
    # everything else is still the image router's
    assert Request.blank("/nothing").get_response(app).status_int == 404


def test_root_of_huimages_serve_leads_to_the_browse_page(live_server):
    """``make serve`` on the embedded default: http://127.0.0.1:8080/ is the browse page."""
    import urllib.request

    with urllib.request.urlopen(live_server.url + "/", timeout=10) as response:
        assert response.status == 200
        assert response.url == live_server.url + "/_browse/"
        assert "text/html" in response.headers["Content-Type"]


# -------------------------------------------------- c. the rendered header


@pytest.mark.parametrize("kind", KINDS)
def test_rendered_config_reads_as_written_for_this_machine(base: Path, kind: str):
    cache, run = base / "srv" / "cache", base / "srv" / "run"
    result = huimages("config", kind, "--cache-dir", str(cache), "--port", "8080",
                      "--run-dir", str(run), *BACKENDS[kind])
    assert result.returncode == 0, result.stderr
    text = result.stdout
    header = text.split("\n\n", 1)[0].splitlines()
    assert header[0].startswith(f"# {'Apache httpd' if kind == 'apache' else kind} configuration"
                                " for huimages-wsgi, written by")
    command = header[1].removeprefix("#   ")
    assert command == shlex.join(["huimages", "config", kind, "--cache-dir", str(cache),
                                  "--port", "8080", "--run-dir", str(run), *BACKENDS[kind]])
    assert any(str(cache) in line for line in header)
    for leftover in ("Placeholders", "string.Template", "##", "${", "placeholder"):
        assert leftover not in text, leftover
    # the header's command renders the very same file
    again = huimages(*shlex.split(command)[1:])
    assert (again.returncode, again.stdout) == (0, text)


def test_template_notes_and_backend_blocks_are_stripped():
    template = (
        "## a note for maintainers\n"
        "\n# for the operator\nkeep;\n"
        "  ##[fcgi]\n  fcgi only;\n  ## note inside\n  ##[end]\n"
        "##[proxy]\nproxy only;\n##[end]\nafter;\n"
    )
    assert webconfig.strip_template_notes(template, frozenset({"fcgi"})) == (
        "# for the operator\nkeep;\n  fcgi only;\nafter;\n"
    )
    assert webconfig.strip_template_notes(template, frozenset({"proxy"})) == (
        "# for the operator\nkeep;\nproxy only;\nafter;\n"
    )


# ------------------------------------------------ d. the 100-megapixel JPEG


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 10000 x 10000 JPEG: over Pillow's 89.5 MP threshold, under twice it."""
    path = tmp_path_factory.mktemp("big") / "big.jpeg"
    Image.new("RGB", (10_000, 10_000), (180, 40, 40)).save(path, quality=40)
    return path


def test_put_of_a_100_megapixel_jpeg_prints_one_clear_line(tmp_path: Path, big_jpeg: Path):
    env = {"HUIMAGES_DATA_DIR": str(tmp_path / "data")}
    env_without_warning_settings = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    result = subprocess.run([str(HUIMAGES), "put", str(big_jpeg)], capture_output=True,
                            text=True, timeout=120, env={**env_without_warning_settings, **env})
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"huimages: {big_jpeg}: image is 10000x10000 = 100000000 pixels; "
        "the limit is 89478485\n"
    )
    assert "DecompressionBombWarning" not in result.stderr and "warn" not in result.stderr


def test_put_of_a_header_claiming_gigapixels_prints_one_clear_line(tmp_path: Path):
    """Over twice Pillow's threshold Pillow raises; the line is ours all the same."""
    bomb = tmp_path / "bomb.jpeg"
    bomb.write_bytes(imagefactory.declared_size_jpeg(60_000, 60_000))
    result = huimages("put", str(bomb), env={"HUIMAGES_DATA_DIR": str(tmp_path / "data")})
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        f"huimages: {bomb}: image has too many pixels; the limit is 89478485\n"
    )
