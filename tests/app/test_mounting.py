"""The image server mounted inside real host applications (the README's recipes).

Flask (wrapping ``app.wsgi_app``, and Werkzeug's DispatcherMiddleware),
Pyramid (wrapping its WSGI app, and a PasteDeploy ``.ini`` pipeline with
``egg:huimages_wsgi#images``), and the documented gunicorn factory
``huimages_wsgi:make_app()`` in a real gunicorn process.  In every case the
host's own routes keep working next to the image routes.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from flask import Flask, request
from paste.deploy import loadapp
from PIL import Image
from pyramid.config import Configurator
from pyramid.response import Response as PyramidResponse
from webob import Request
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client

from huimages_wsgi import Config, ImageMiddleware, ImageStore, make_app
from huimages_wsgi.core.ids import compute_id
from huimages_wsgi.web.logs import ACCESS_LOGGER

from .. import imagefactory
from ..conftest import free_port

BIN = Path(sys.executable).parent
WIDTH, HEIGHT = 800, 600
UNKNOWN_ID = compute_id(b"never uploaded")


@pytest.fixture
def mounted_config(tmp_path: Path) -> Config:
    # URLs the store builds point below the mount point
    return Config(data_dir=tmp_path / "data", server_url="http://localhost/img/")


@pytest.fixture
def mounted_store(mounted_config: Config) -> ImageStore:
    return ImageStore(mounted_config)


@pytest.fixture
def imageid(mounted_store: ImageStore) -> str:
    data = imagefactory.photo_jpeg(WIDTH, HEIGHT, seed=3)
    return mounted_store.save_image(data, title="Red bike")


def image_size(body: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(body)) as img:
        assert img.format == "JPEG"
        return img.size


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def path_of(url: str) -> str:
    return urllib.parse.urlsplit(url).path


# ------------------------------------------------------------------ hosts


def flask_host() -> Flask:
    app = Flask("flask_host")

    @app.route("/")
    def index() -> str:
        return "flask home"

    @app.route("/hello")
    def hello() -> str:
        return f"hello {request.args.get('name', 'world')}"

    return app


def pyramid_host(global_conf: dict | None = None, **settings: str):
    """A Pyramid application; also the ``call:`` app factory of the .ini tests."""

    def hello(req):
        return PyramidResponse(f"pyramid hello {req.params.get('name', 'world')}")

    def home(req):
        return PyramidResponse("pyramid home")

    with Configurator(settings=settings) as config:
        config.add_route("home", "/")
        config.add_route("hello", "/hello")
        config.add_view(home, route_name="home")
        config.add_view(hello, route_name="hello")
        return config.make_wsgi_app()


# ------------------------------------------------------------- assertions


def check_images(get, store: ImageStore, imageid: str) -> None:
    """``get(path) -> (status, content_type, body)`` against an app mounted at /img."""
    seo_url = store.scaled_imageurl(imageid, "200x200")  # .../img/200x200/<ID>/red-bike.jpeg
    assert path_of(seo_url) == f"/img/200x200/{imageid}/red-bike.jpeg"
    status, ctype, body = get(path_of(seo_url))
    assert (status, ctype) == (200, "image/jpeg")
    assert image_size(body) == (200, 150)
    status, _, again = get(f"/img/200x200/{imageid}.jpeg")
    assert (status, again) == (200, body)
    status, _, body = get(f"/img/75x75!/{imageid}.jpeg")
    assert status == 200 and image_size(body) == (75, 75)
    status, _, body = get(path_of(store.imageurl(imageid)))
    assert status == 200 and image_size(body) == (WIDTH, HEIGHT)
    status, _, body = get(f"/img/12xx/{imageid}.jpeg")
    assert status == 400 and b"size" in body
    status, _, _ = get(f"/img/75x75/{UNKNOWN_ID}.jpeg")
    assert status == 404


def werkzeug_get(app):
    client = Client(app)

    def get(path: str):
        response = client.get(path)
        return response.status_code, response.mimetype, response.get_data()

    return get


def webob_get(app):
    def get(path: str):
        response = Request.blank(path).get_response(app)
        return response.status_code, response.content_type, response.body

    return get


# ------------------------------------------------------------------ Flask


def test_flask_wrapping_wsgi_app(mounted_store, imageid):
    app = flask_host()
    app.wsgi_app = ImageMiddleware(app.wsgi_app, prefix="/img", store=mounted_store)
    check_images(werkzeug_get(app), mounted_store, imageid)

    client = app.test_client()
    assert client.get("/").get_data() == b"flask home"
    assert client.get("/hello?name=bike").get_data() == b"hello bike"
    assert client.get("/nope").status_code == 404
    assert client.get(f"/imgx/o/{imageid}.jpeg").status_code == 404  # not below /img/


def test_flask_with_dispatcher_middleware(mounted_config, mounted_store, imageid):
    app = flask_host()
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/img": make_app(mounted_config)})
    check_images(werkzeug_get(app), mounted_store, imageid)

    client = app.test_client()
    assert client.get("/").get_data() == b"flask home"
    assert client.get("/hello").get_data() == b"hello world"
    root = client.get("/img/")  # the image app's own "/": what this server is
    assert root.status_code == 200 and root.get_data().startswith(b"huimages-wsgi ")
    assert client.get("/img/nothing").status_code == 404  # the image app's own 404


# ---------------------------------------------------------------- Pyramid


def test_pyramid_wrapped(mounted_store, imageid):
    app = ImageMiddleware(pyramid_host(), prefix="/img", store=mounted_store)
    get = webob_get(app)
    check_images(get, mounted_store, imageid)
    assert get("/") == (200, "text/html", b"pyramid home")
    assert get("/hello?name=bike") == (200, "text/html", b"pyramid hello bike")
    assert get("/nope")[0] == 404


PIPELINE_INI = """\
[app:myapp]
use = call:tests.app.test_mounting:pyramid_host

[pipeline:main]
pipeline = egg:huimages_wsgi#images myapp
"""

SECTION_INI = """\
[app:myapp]
use = call:tests.app.test_mounting:pyramid_host

[filter:images]
use = egg:huimages_wsgi#images
prefix = /pictures
data_dir = data
allowed_sizes = 200x200, square

[pipeline:main]
pipeline = images myapp
"""


def test_paste_pipeline_with_egg_filter(tmp_path, mounted_config, mounted_store, imageid,
                                        monkeypatch):
    """``pipeline = egg:huimages_wsgi#images myapp``: settings from the environment."""
    monkeypatch.setenv("HUIMAGES_DATA_DIR", str(mounted_config.data_dir))
    monkeypatch.setenv("IMAGESERVERURL", "http://localhost/img/")
    ini = tmp_path / "site.ini"
    ini.write_text(PIPELINE_INI)
    app = loadapp(f"config:{ini}")
    assert isinstance(app, ImageMiddleware) and app.prefix == "/img"
    get = webob_get(app)
    check_images(get, mounted_store, imageid)
    assert get("/hello?name=paste") == (200, "text/html", b"pyramid hello paste")
    assert get("/")[2] == b"pyramid home"


def test_paste_filter_section_settings(tmp_path, imageid, mounted_store, monkeypatch):
    """ini keys over the environment; a relative data_dir is relative to the ini file."""
    monkeypatch.delenv("HUIMAGES_DATA_DIR", raising=False)
    monkeypatch.delenv("HUIMAGES_CACHE_DIR", raising=False)
    assert mounted_store.config.data_dir == tmp_path / "data"
    ini = tmp_path / "site.ini"
    ini.write_text(SECTION_INI)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    app = loadapp(f"config:{ini}")
    assert app.config.data_dir == tmp_path / "data"
    assert app.config.allowed_sizes == frozenset({"200x200", "square"})
    get = webob_get(app)
    status, ctype, body = get(f"/pictures/square/{imageid}/bike.jpeg")
    assert (status, ctype) == (200, "image/jpeg") and image_size(body) == (75, 75)
    assert get(f"/pictures/300x300/{imageid}.jpeg")[0] == 403  # not in the allow-list
    assert get(f"/img/square/{imageid}.jpeg")[0] == 404  # Pyramid's: other prefix
    assert get("/hello")[2] == b"pyramid hello world"
    assert not (elsewhere / "huimages-data").exists()


def test_paste_app_factory_and_bad_key(tmp_path, mounted_config, imageid):
    ini = tmp_path / "images.ini"
    main = "[app:main]\nuse = egg:huimages_wsgi#main\n"
    ini.write_text(f"{main}data_dir = {mounted_config.data_dir}\n")
    status, ctype, body = webob_get(loadapp(f"config:{ini}"))(f"/240x240/{imageid}.jpeg")
    assert (status, ctype) == (200, "image/jpeg") and image_size(body) == (240, 180)

    ini.write_text(f"{main}datadir = /srv\n")
    with pytest.raises(TypeError, match="unknown configuration key 'datadir'"):
        loadapp(f"config:{ini}")
    ini.write_text(f"{main}jpeg_quality = best\n")
    with pytest.raises(ValueError, match="jpeg_quality='best'"):
        loadapp(f"config:{ini}")


# --------------------------------------------------------------- gunicorn


def test_gunicorn_app_factory(mounted_config, imageid):
    """The documented ``gunicorn 'huimages_wsgi:make_app()'``, configured by the environment."""
    port = free_port()
    log = mounted_config.data_dir.parent / "gunicorn.log"
    env = {**os.environ, "HUIMAGES_DATA_DIR": str(mounted_config.data_dir),
           "HUIMAGES_ACCESS_LOG": "1", "HUIMAGES_LOG_FORMAT": "json"}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "2",
             "huimages_wsgi:make_app()"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while not port_open(port):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        with urllib.request.urlopen(f"{base}/200x200/{imageid}/red-bike.jpeg", timeout=30) as r:
            status, ctype, body = r.status, r.headers["Content-Type"], r.read()
        assert (status, ctype) == (200, "image/jpeg")
        assert image_size(body) == (200, 150)
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"{base}/12xx/{imageid}.jpeg", timeout=30)
        assert error.value.code == 400
    finally:
        process.terminate()
        process.wait(timeout=30)
    # HUIMAGES_ACCESS_LOG and HUIMAGES_LOG_FORMAT hold without the huimages command too
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    requests = [(e["status"], e["path"]) for e in lines if e.get("logger") == ACCESS_LOGGER]
    assert (200, f"/200x200/{imageid}/red-bike.jpeg") in requests, log.read_text()
    assert (400, f"/12xx/{imageid}.jpeg") in requests, log.read_text()


def test_importing_the_package_loads_no_api_browse_or_metrics():
    """``import huimages_wsgi`` pulls in images only; make_app imports the endpoints lazily.

    That the middleware's own modules import no endpoint is an import-linter
    contract (pyproject.toml); this checks what the package root loads."""
    code = (
        "import sys\n"
        "from huimages_wsgi import ImageMiddleware, save_image\n"
        "fronts = ('api', 'browse', 'metrics', 'health', 'app', 'uploads')\n"
        "loaded = [f for f in fronts if 'huimages_wsgi.web.' + f in sys.modules]\n"
        "assert not loaded, loaded\n"
        "from huimages_wsgi import make_app\n"
        "assert 'huimages_wsgi.web.api' in sys.modules and callable(make_app)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
