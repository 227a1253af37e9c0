"""Format by Accept (issue 24, point 3): with HUIMAGES_AUTO_FORMAT, a ``.jpeg`` variant
URL answers AVIF or WebP to a client that names it, always with ``Vary: Accept``, from
the same cache files as the explicit-extension URLs. The webservers make the same
choice for hits: tests/system/test_deployment.py."""

from __future__ import annotations

import pytest
from webob import Request

from huimages_wsgi import Config, ImageMiddleware, ImageStore
from huimages_wsgi.core.formats import accepted_format
from huimages_wsgi.core.signing import sign

from .. import imagefactory as f

CHROME = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
SAFARI_OLD = "image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5"


def get(app, path, accept=None, **headers):
    if accept is not None:
        headers["Accept"] = accept
    return Request.blank(path, headers=headers).get_response(app)


@pytest.fixture
def auto(tmp_path):
    store = ImageStore(Config(data_dir=tmp_path / "data", auto_format=True))
    return ImageMiddleware(prefix="", store=store), store.save_image(f.photo_jpeg(400, 300))


@pytest.mark.parametrize("accept, expected", [
    (CHROME, "avif"), (SAFARI_OLD, "webp"), ("*/*", None), ("", None),
    ("image/avif;q=0, image/webp", "webp"), ("image/AVIF", "avif"),
    ("image/avif;q=nonsense", None), ("image/*", None),
])
def test_the_client_must_name_the_format(accept, expected):
    assert accepted_format(accept, ("avif", "webp")) == expected
    assert accepted_format(CHROME, ("webp", "avif")) == "webp"  # the configured order


def test_a_jpeg_url_answers_the_format_the_client_names(auto, tmp_path):
    app, imageid = auto
    path = f"/240x160/{imageid}.jpeg"
    answers = {accept: get(app, path, accept) for accept in (CHROME, SAFARI_OLD, "*/*")}
    assert [answers[a].content_type for a in (CHROME, SAFARI_OLD, "*/*")] == [
        "image/avif", "image/webp", "image/jpeg"]
    assert all(answer.headers["Vary"] == "Accept" for answer in answers.values())
    cache = tmp_path / "data" / "cache" / "240x160"
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == [
        f"{imageid}.avif", f"{imageid}.jpeg", f"{imageid}.webp"]
    explicit = get(app, f"/240x160/{imageid}.avif")  # the same file as the explicit URL
    assert explicit.body == answers[CHROME].body and "Vary" not in explicit.headers
    seo = get(app, f"/240x160/{imageid}/a-name.jpeg", CHROME)
    assert seo.content_type == "image/avif"
    assert seo.headers["Link"] == f'</240x160/{imageid}.jpeg>; rel="canonical"'
    again = get(app, path, CHROME, **{"If-Modified-Since": answers[CHROME].headers[
        "Last-Modified"]})
    assert again.status_int == 304 and again.headers["Vary"] == "Accept"


def test_originals_and_other_formats_are_never_negotiated(auto):
    app, imageid = auto
    original = get(app, f"/o/{imageid}.jpeg", CHROME)
    assert original.content_type == "image/jpeg" and "Vary" not in original.headers
    webp = get(app, f"/240x160/{imageid}.webp", CHROME)
    assert webp.content_type == "image/webp" and "Vary" not in webp.headers


def test_off_by_default(tmp_path):
    store = ImageStore(Config(data_dir=tmp_path / "data"))
    app = ImageMiddleware(prefix="", store=store)
    imageid = store.save_image(f.photo_jpeg(400, 300))
    answer = get(app, f"/240x160/{imageid}.jpeg", CHROME)
    assert answer.content_type == "image/jpeg" and "Vary" not in answer.headers


def test_a_signed_jpeg_url_renders_the_negotiated_format(tmp_path):
    secret = "a-secret-of-sixteen-chars"
    store = ImageStore(Config(data_dir=tmp_path / "data", auto_format=True, secret=secret))
    app = ImageMiddleware(prefix="", store=store)
    imageid = store.save_image(f.photo_jpeg(400, 300))
    signed = f"/240x160/{imageid}.jpeg?sig={sign(secret, '240x160', imageid, 'jpeg')}"
    answer = get(app, signed, CHROME)
    assert answer.status_int == 200 and answer.content_type == "image/avif"
    assert get(app, f"/250x160/{imageid}.jpeg", CHROME).status_int == 403  # unsigned miss


@pytest.mark.parametrize("formats", [(), ("png",), ("gif",)])
def test_only_avif_and_webp_may_be_chosen(tmp_path, formats):
    with pytest.raises(ValueError, match="auto_formats"):
        Config(data_dir=tmp_path, auto_format=True, auto_formats=formats)
