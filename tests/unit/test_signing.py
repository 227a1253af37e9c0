"""Signed URLs: the signature gates generation, never a cached hit."""

import pytest
from webob import Request

from huimages_wsgi import Config, ImageStore, make_app
from huimages_wsgi.core.signing import sign, verify

from .. import imagefactory as f

SECRET = "s3cr3t-0123456789"


def test_sign_and_verify():
    token = sign(SECRET, "75x75!", "A" * 32 + "01", "jpeg")
    assert len(token) == 22 and "=" not in token
    assert verify(SECRET, "75x75!", "A" * 32 + "01", "jpeg", token)
    assert not verify(SECRET, "75x75", "A" * 32 + "01", "jpeg", token)  # other size
    assert not verify(SECRET, "75x75!", "B" * 32 + "01", "jpeg", token)  # other image
    assert not verify(SECRET, "75x75!", "A" * 32 + "01", "webp", token)  # other format
    assert not verify("other-secret-0123", "75x75!", "A" * 32 + "01", "jpeg", token)
    for bad in (None, "", "x" * 500, token[:-1], "ü" * 22):
        assert not verify(SECRET, "75x75!", "A" * 32 + "01", "jpeg", bad)


@pytest.fixture
def signed(tmp_path):
    config = Config(data_dir=tmp_path, secret=SECRET, server_url="http://i.test/")
    app = make_app(config)
    imageid = app.store.save_image(f.solid_jpeg(300, 200), title="Signed")
    return app, app.store, imageid


def status(app, url):
    return Request.blank(url.replace("http://i.test", "")).get_response(app).status_int


def test_client_urls_are_signed_and_accepted(signed):
    app, store, imageid = signed
    url = store.scaled_imageurl(imageid, "120x120")
    assert "?sig=" in url and url.split("?sig=")[1] == sign(SECRET, "120x120", imageid, "jpeg")
    assert status(app, url) == 200
    assert status(app, store.imageurl(imageid)) == 200
    assert status(app, store.scaled_imageurl(imageid, "square")) == 200


def test_missing_or_wrong_signature_is_403_and_generates_nothing(signed):
    app, store, imageid = signed
    assert status(app, f"/120x120/{imageid}.jpeg") == 403
    assert status(app, f"/120x120/{imageid}.jpeg?sig=AAAAAAAAAAAAAAAAAAAAAA") == 403
    other_size = sign(SECRET, "121x121", imageid, "jpeg")
    assert status(app, f"/120x120/{imageid}.jpeg?sig={other_size}") == 403
    jpeg = sign(SECRET, "120x120", imageid, "jpeg")
    for ext in ("webp", "avif", "png"):  # one signature makes one format, not four
        assert status(app, f"/120x120/{imageid}.{ext}?sig={jpeg}") == 403
    assert not (store.config.cache_root / "120x120").exists()


def test_each_format_has_its_own_signature(signed):
    app, store, imageid = signed
    urls = {ext: store.scaled_imageurl(imageid, "120x120", ext) for ext in ("jpeg", "webp", "png")}
    assert len({url.split("?sig=")[1] for url in urls.values()}) == 3
    for ext, url in urls.items():
        assert url.split("?sig=")[1] == sign(SECRET, "120x120", imageid, ext)
        assert status(app, url) == 200, ext
    original = store.imageurl(imageid)
    assert original.split("?sig=")[1] == sign(SECRET, "o", imageid, "jpeg")


def test_cached_variants_are_served_without_a_signature(signed):
    app, store, imageid = signed
    assert status(app, store.scaled_imageurl(imageid, "120x120")) == 200
    assert status(app, f"/120x120/{imageid}.jpeg") == 200  # the cheap path is open


def test_allow_list_mode(tmp_path):
    config = Config(data_dir=tmp_path, allowed_sizes=frozenset({"thumb", "75x75!"}))
    app = make_app(config)
    imageid = app.store.save_image(f.solid_jpeg(300, 200))
    assert status(app, f"/thumb/{imageid}.jpeg") == 200
    assert status(app, f"/75x75!/{imageid}.jpeg") == 200
    assert status(app, f"/square/{imageid}.jpeg") == 200  # resolves to an allowed box
    assert status(app, f"/76x76!/{imageid}.jpeg") == 403
    assert status(app, f"/o/{imageid}.jpeg") == 403


def test_store_without_secret_builds_unsigned_urls(tmp_path):
    store = ImageStore(Config(data_dir=tmp_path))
    imageid = store.save_image(f.solid_jpeg())
    assert "?" not in store.scaled_imageurl(imageid, "10x10")


@pytest.mark.parametrize("secret", [None, SECRET])
def test_allow_listed_presets_make_working_client_urls(tmp_path, secret):
    """URLs name a preset's box (one cache file for both spellings), so the allow-list
    admits the box of every preset it names; other sizes stay refused."""
    config = Config(data_dir=tmp_path, server_url="http://i.test/", secret=secret,
                    allowed_sizes=frozenset({"square", "o"}))
    app = make_app(config)
    imageid = app.store.save_image(f.solid_jpeg(300, 200), title="Listed")
    url = app.store.scaled_imageurl(imageid, "square")
    assert url.startswith(f"http://i.test/75x75!/{imageid}/listed.jpeg")
    assert status(app, url) == 200
    assert status(app, app.store.imageurl(imageid)) == 200
    assert 'width="75" height="75"' in app.store.scaled_tag(imageid, "square")
    for refused in ("76x76!", "75x75", "thumb", "50x200"):
        assert status(app, f"/{refused}/{imageid}.jpeg") == 403, refused
