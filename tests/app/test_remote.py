"""The client library over HTTP (HUIMAGES_API_URL) against a real ``huimages serve``,
whose own storage is the embedded default or S3+CouchDB."""

from __future__ import annotations

import datetime
import io
import json
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

import huimages_wsgi
from huimages_wsgi import (
    BackendUnavailable,
    Config,
    ImageNotFound,
    ImageStore,
    ImageTooLarge,
    InvalidImage,
)
from huimages_wsgi.core.ids import compute_id
from huimages_wsgi.store import module_api as client
from huimages_wsgi.store import open_store
from huimages_wsgi.store.httpstore import HttpImageStore, NotAvailableRemotely, RemoteError

from .. import imagefactory as f
from ..conftest import BIN, LiveServer

TOKEN = "remote-token-0123456789"
BOTH = pytest.mark.parametrize("backend", ["embedded", "s3+couch"], indirect=True)


@pytest.fixture
def server(any_config: Config, tmp_path) -> Iterator[LiveServer]:
    """``huimages serve`` on the backends of ``any_config``, with the upload API on."""
    env = {"HUIMAGES_UPLOAD_TOKEN": TOKEN}
    if any_config.s3_bucket:
        env["HUIMAGES3BUCKET"] = any_config.s3_bucket
    if any_config.couch_server:
        env.update(HUIMAGESCOUCHSERVER=any_config.couch_server,
                   HUIMAGES_COUCHDB_NAME=any_config.couch_db)
    live = LiveServer(tmp_path / "server-data", env=env).start()
    yield live
    live.stop()


def remote_config(server: LiveServer, tmp_path, **changes) -> Config:
    settings = {"data_dir": tmp_path / "client-data", "server_url": server.url + "/",
                "api_url": server.url, "upload_token": TOKEN, **changes}
    return Config(**settings)


@BOTH
def test_the_client_api_over_http(server, tmp_path):
    store = open_store(remote_config(server, tmp_path))
    assert isinstance(store, HttpImageStore)
    data = f.photo_jpeg(480, 320, seed=31)
    imageid = store.save_image(data, title="Red bike", references={"sku": "14600"},
                               filename="bike.jpg", typ="product_image",
                               timestamp="20090129T123456.000123")
    assert imageid == compute_id(data)
    doc = store.get_imagedoc(imageid)
    assert doc["title"] == ["Red bike"] and doc["references"] == {"sku": ["14600"]}
    assert doc["types"] == ["product_image"] and doc["filename"] == "bike.jpg"
    assert doc["ctime"] == "20090129T123456.000123"
    assert store.get_length(imageid) == len(data)

    url = store.scaled_imageurl(imageid, "240x160")
    assert url == f"{server.url}/240x160/{imageid}/red-bike.jpeg"
    assert store.scaled_dimensions(imageid, "240x160") == (240, 160)
    assert 'width="240" height="160" alt="Red bike"' in store.scaled_tag(imageid, "240x160")
    with urllib.request.urlopen(url, timeout=60) as response:
        assert Image.open(io.BytesIO(response.read())).size == (240, 160)
    variant = store.scaled_imagedata(imageid, "square")
    assert Image.open(io.BytesIO(variant)).size == (75, 75)

    store.set_title(imageid, "Blue bike")
    store.update_metadata(imageid, references={"sku": "14601"},
                          timestamp=datetime.datetime(2011, 1, 2, 3, 4, 5))
    doc = store.get_imagedoc(imageid)
    assert doc["mtime"].startswith("20110102T030405")  # huImages' update_metadata(timestamp)
    assert doc["title"] == ["Red bike", "Blue bike"]
    assert doc["references"] == {"sku": ["14600", "14601"]}
    assert store.scaled_imageurl(imageid).endswith("/red-bike.jpeg")  # the first title stays

    store.delete_image(imageid)
    with pytest.raises(ImageNotFound):
        store.get_imagedoc(imageid)
    with pytest.raises(ImageNotFound):
        store.delete_image(imageid)
    assert store.scaled_dimensions(imageid, "240x160") == (None, None)


@BOTH
def test_errors_arrive_as_the_local_exception_classes(server, tmp_path):
    store = open_store(remote_config(server, tmp_path))
    with pytest.raises(InvalidImage):
        store.save_image(b"certainly not a jpeg")
    with pytest.raises(ImageTooLarge):  # the server's pixel limit
        store.save_image(f.declared_size_jpeg(20000, 20000))
    small = open_store(remote_config(server, tmp_path, max_upload_bytes=1000))
    with pytest.raises(ImageTooLarge):  # refused here, before sending
        small.save_image(f.photo_jpeg(300, 300))
    with pytest.raises(NotAvailableRemotely):
        list(store.catalog.ids())
    wrong = open_store(remote_config(server, tmp_path, upload_token="not-the-token-0123456789"))
    with pytest.raises(RemoteError) as refused:
        wrong.save_image(f.solid_jpeg())
    assert refused.value.status == 403 and "HUIMAGES_UPLOAD_TOKEN" in str(refused.value)


def test_module_api_and_cli_use_the_server(tmp_path, monkeypatch):
    """``HUIMAGES_API_URL`` switches ``import huimages_wsgi`` and ``huimages put`` to HTTP."""
    live = LiveServer(tmp_path / "server-data", env={"HUIMAGES_UPLOAD_TOKEN": TOKEN}).start()
    try:
        monkeypatch.setattr(client, "_default", None)
        for key, value in {"HUIMAGES_API_URL": live.url, "HUIMAGES_UPLOAD_TOKEN": TOKEN,
                           "IMAGESERVERURL": live.url + "/",
                           "HUIMAGES_DATA_DIR": str(tmp_path / "client-data")}.items():
            monkeypatch.setenv(key, value)
        imageid = huimages_wsgi.save_image(f.photo_jpeg(200, 100, seed=32), title="Via HTTP")
        assert isinstance(client.default_store(), HttpImageStore)
        assert huimages_wsgi.get_imagedoc(imageid)["title"] == ["Via HTTP"]
        # the server's own store sees it: it really went over HTTP
        server_store = ImageStore(Config(data_dir=live.data_dir))
        assert server_store.get_imagedoc(imageid)["title"] == ["Via HTTP"]
        assert not (tmp_path / "client-data" / "originals").exists()

        photo = tmp_path / "cli.jpg"
        photo.write_bytes(f.photo_jpeg(100, 80, seed=33))
        put = subprocess.run([str(BIN / "huimages"), "put", "--title", "From CLI", str(photo)],
                             capture_output=True, text=True, check=True)
        cli_id = put.stdout.strip()
        assert server_store.get_imagedoc(cli_id)["title"] == ["From CLI"]

        live.stop()
        monkeypatch.setattr(client, "_default", None)
        with pytest.raises(BackendUnavailable):
            huimages_wsgi.get_imagedoc(imageid)
    finally:
        live.stop()


@BOTH
def test_browsing_over_http(server, tmp_path):
    store = open_store(remote_config(server, tmp_path))
    assert store.get_random_imageid() is None  # an empty store
    a, b, c = sorted(store.save_image(f.solid_jpeg(colour=(70 * i, 0, 0))) for i in range(3))
    assert (store.get_next_imageid(a), store.get_next_imageid(b)) == (b, c)
    assert store.get_next_imageid(c) is None
    assert (store.get_previous_imageid(c), store.get_previous_imageid(a)) == (b, None)
    assert store.get_random_imageid() in {a, b, c}
    store.delete_image(b)
    assert store.get_next_imageid(a) == c


class Recorder(BaseHTTPRequestHandler):
    """Another origin: records every request it gets and answers like the API would."""

    seen: list[tuple[str, str, str | None]]

    def answer(self) -> None:
        self.seen.append((self.command, self.path, self.headers.get("Authorization")))
        body = json.dumps({"id": "A" * 32 + "01", "title": ["elsewhere"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = answer

    def log_message(self, *args) -> None:
        pass


class Redirector(BaseHTTPRequestHandler):
    """Answers every request with ``status`` to the same path on the other origin."""

    target: str
    status: int

    def answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(self.status)
        self.send_header("Location", self.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PATCH = do_DELETE = answer

    def log_message(self, *args) -> None:
        pass


def serving(handler: type) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_the_client_follows_no_redirect_and_sends_the_token_nowhere_else(tmp_path, status):
    seen: list[tuple[str, str, str | None]] = []
    other, other_url = serving(type("Other", (Recorder,), {"seen": seen}))
    front, front_url = serving(type("Front", (Redirector,),
                                    {"target": other_url, "status": status}))
    try:
        store = open_store(Config(data_dir=tmp_path / "client", api_url=front_url,
                                  upload_token=TOKEN, server_url=front_url + "/"))
        imageid = compute_id(f.solid_jpeg())
        calls = [lambda: store.save_image(f.solid_jpeg(), title="x"),
                 lambda: store.get_imagedoc(imageid),
                 lambda: store.set_title(imageid, "y"),
                 lambda: store.delete_image(imageid),
                 lambda: store.get_random_imageid(),
                 lambda: store.scaled_imagedata(imageid, "100x100")]
        for call in calls:
            with pytest.raises(RemoteError) as refused:
                call()
            assert refused.value.status == status
            assert f"{other_url}/" in str(refused.value) and "redirect" in str(refused.value)
        assert seen == []  # the other origin never heard from the client, token or not
    finally:
        front.shutdown()
        other.shutdown()
