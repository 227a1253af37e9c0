"""Backends that are down or frozen: 503 with Retry-After in bounded time, then recovery.

These tests stop, kill and freeze (SIGSTOP) real servers, so they run on their
own SeaweedFS and pouchdb-server instances rather than the session's shared ones.
The time bounds are not performance claims: without working timeouts these
requests would hang for ever.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator

import pytest
from webob import Request

from huimages_wsgi import ImageStore, make_app
from huimages_wsgi.core.errors import BackendUnavailable
from huimages_wsgi.core.files import TEMP_SUFFIX

from .. import imagefactory as f
from ..backends import backend_config
from ..services import ManagedServer

TIMEOUT = 1.5  # the configured backend timeout
BOUND = 20.0  # seconds within which a request must give up (a hang is the failure)


@pytest.fixture
def setup(tmp_path, own_s3, own_couch, monkeypatch):
    """An S3+CouchDB app with one image whose 100x100 variant is already cached."""
    for key, value in own_s3.env.items():
        monkeypatch.setenv(key, value)
    config = backend_config("s3+couch", tmp_path / "data", own_s3, own_couch,
                            backend_timeout=TIMEOUT)
    store = ImageStore(config)
    imageid = store.save_image(f.photo_jpeg(400, 300))
    app = make_app(config=config)
    assert get(app, f"/100x100/{imageid}.jpeg").status_int == 200
    return app, store, imageid


def get(app, path: str):
    return Request.blank(path).get_response(app)


@contextlib.contextmanager
def frozen(server: ManagedServer) -> Iterator[None]:
    """SIGSTOP: the server still accepts connections but never answers (a slow backend)."""
    os.killpg(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(server.pid, signal.SIGCONT)


def assert_unavailable_then_cache_intact(app, store, imageid: str) -> None:
    started = time.monotonic()
    response = get(app, f"/200x200/{imageid}.jpeg")
    elapsed = time.monotonic() - started
    assert response.status_int == 503, response.body
    assert int(response.headers["Retry-After"]) > 0
    assert response.content_type == "text/plain"
    assert elapsed < BOUND
    cached = get(app, f"/100x100/{imageid}.jpeg")  # a hit needs no backend at all
    assert cached.status_int == 200 and cached.body[:2] == b"\xff\xd8"
    files = [p for p in store.cache.root.rglob("*") if p.is_file() and ".locks" not in p.parts]
    assert [p.relative_to(store.cache.root).as_posix() for p in files] == [
        f"100x100/{imageid}.jpeg"
    ]
    assert not [p for p in files if p.name.endswith(TEMP_SUFFIX)]


def assert_recovered(app, imageid: str) -> None:
    deadline = time.monotonic() + BOUND
    while True:
        response = get(app, f"/200x200/{imageid}.jpeg")
        if response.status_int == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert response.status_int == 200, response.body


@pytest.mark.parametrize("server_name", ["own_s3", "own_couch"])
def test_backend_down_gives_503_and_service_resumes(setup, server_name, request):
    app, store, imageid = setup
    server: ManagedServer = request.getfixturevalue(server_name)
    server.stop()
    try:
        assert_unavailable_then_cache_intact(app, store, imageid)
    finally:
        server.start()
    assert_recovered(app, imageid)


@pytest.mark.parametrize("server_name", ["own_s3", "own_couch"])
def test_frozen_backend_times_out_with_503(setup, server_name, request):
    app, store, imageid = setup
    with frozen(request.getfixturevalue(server_name)):
        assert_unavailable_then_cache_intact(app, store, imageid)
    assert_recovered(app, imageid)


def test_crashed_s3_during_upload_stores_nothing_half(setup, own_s3):
    """An upload that cannot reach S3 fails clearly and leaves no catalog entry behind."""
    app, store, _ = setup
    data = f.photo_jpeg(120, 90, seed=3)
    own_s3.kill()
    try:
        with pytest.raises(BackendUnavailable):
            store.save_image(data, title="lost?")
        ids_while_down = set(store.catalog.ids(include_deleted=True))
    finally:
        own_s3.start()
    imageid = store.save_image(data, title="retried")
    assert imageid not in ids_while_down
    assert store.get_imagedoc(imageid)["title"] == ["retried"]
    assert get(app, f"/50x50/{imageid}.jpeg").status_int == 200


def test_catalog_down_during_upload_keeps_the_original_retryable(setup, own_couch):
    """Original written, catalog unreachable: a clear error, and a retry completes it."""
    app, store, _ = setup
    data = f.photo_jpeg(120, 90, seed=4)
    own_couch.stop()
    try:
        with pytest.raises(BackendUnavailable):
            store.save_image(data, title="first try")
    finally:
        own_couch.start()
    imageid = store.save_image(data, title="second try")
    assert store.get_imagedoc(imageid)["title"] == ["second try"]
    assert get(app, f"/50x50/{imageid}.jpeg").status_int == 200
