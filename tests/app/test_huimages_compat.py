"""Code and links written for huImages 2.2 keep working (issue 21), on the embedded
default and on S3 + CouchDB.

The calls are huImages' own, as its documentation and its image-browser view
(``huimages/imagebrowser/views.py``) make them: positional and keyword forms,
its defaults, its "nothing there" answers. The links are every form its
``server.py`` answered. Where this project deliberately answers otherwise,
docs/migrating.md says so and the test says which difference it checks.
"""

from __future__ import annotations

import datetime
import io
import re
from collections.abc import Iterator

import pytest
from PIL import Image
from webob import Request

import huimages_wsgi as huimages
from huimages_wsgi import Config, ImageMiddleware, make_app
from huimages_wsgi.core.errors import InvalidImage, InvalidTimestamp
from huimages_wsgi.store import module_api

from .. import imagefactory as f

BOTH = pytest.mark.parametrize("backend", ["embedded", "s3+couch"], indirect=True)
UNKNOWN = "A" * 32 + "01"
BASE = "http://i.example.com/"


@pytest.fixture
def old_code(any_config: Config, monkeypatch: pytest.MonkeyPatch) -> Iterator[Config]:
    """The module API as an application written for huImages sets it up: the settings
    assigned to the module at start-up, over this backend's configuration."""
    monkeypatch.setattr(module_api, "_default", None)
    monkeypatch.setattr(module_api, "_overrides", {})
    monkeypatch.setattr(module_api, "_base", None)
    huimages.configure(any_config)
    huimages.IMAGESERVERURL = BASE
    yield any_config


def get(app, path: str):
    return Request.blank(path).get_response(app)


# -- calls -------------------------------------------------------------------------------


@BOTH
def test_the_original_signatures_and_answers(old_code):
    photo = f.photo_jpeg(600, 400)
    # save_image(imagedata, contenttype, timestamp, title, references, filename, typ)
    imageid = huimages.save_image(photo, "image/jpeg", datetime.datetime(2009, 1, 29, 12),
                                  "Red bike", {"artnr": "14600"}, "bike.jpg", "product_image")
    assert re.fullmatch(r"[A-Z2-7]{32}01", imageid)
    assert huimages.save_image(photo) == imageid  # the same bytes, the same ID

    # update_metadata(doc_id, timestamp=None, title='', references=None, typ='') -> the ID
    assert huimages.update_metadata(imageid, None, "Blue bike") == imageid
    assert huimages.update_metadata(imageid, datetime.datetime(2010, 3, 1, 8)) == imageid
    assert huimages.update_metadata(doc_id=imageid, timestamp=None, title="", typ="x",
                                    references={"artnr": "14601"}) == imageid
    assert huimages.update_metadata(imageid, None, "", {"ean": "4005"}, "y") == imageid
    doc = huimages.get_imagedoc(imageid)
    assert doc["title"] == ["Red bike", "Blue bike"]
    assert doc["references"] == {"artnr": ["14600", "14601"], "ean": ["4005"]}
    assert doc["types"] == ["product_image", "x", "y"]
    assert doc["ctime"].startswith("20090129T12") and doc["mtime"] > doc["ctime"]
    assert huimages.get_length(imageid) == len(photo)
    huimages.set_title(imageid, "Green bike")

    # the default size is 150x150 (a fit), everywhere
    assert huimages.scaled_imageurl(imageid) == f"{BASE}150x150/{imageid}/red-bike.jpeg"
    assert huimages.scaled_dimensions(imageid) == (150, 100)
    data = huimages.scaled_imagedata(imageid)
    assert Image.open(io.BytesIO(data)).size == (150, 100)
    tag = huimages.scaled_tag(imageid)
    assert tag == (f'<img src="{BASE}150x150/{imageid}/red-bike.jpeg" width="150" '
                   'height="100" alt="Green bike" />')  # URL: the first title; alt: the newest
    assert huimages.imageurl(imageid) == f"{BASE}o/{imageid}.jpeg"
    assert huimages.imageurl(imageid, "240x160") == f"{BASE}240x160/{imageid}.jpeg"
    assert huimages.scaled_dimensions(imageid, "vga") == (600, 400)  # never upscaled


@BOTH
def test_scaled_tag_takes_raw_extras_and_every_keyword_as_an_attribute(old_code):
    imageid = huimages.save_image(f.photo_jpeg(640, 480), title="Bike")
    tag = huimages.scaled_tag(imageid, "vga", 'border="0"', alt="A bike", doc="x",
                              formats="y", srcset="z 2x", base_url="w", **{"class": "big"})
    assert ' border="0" ' in tag  # as it is
    for attribute in ('alt="A bike"', 'doc="x"', 'formats="y"', 'srcset="z 2x"',
                      'base_url="w"', 'class="big"'):
        assert attribute in tag
    assert tag.startswith(f'<img src="{BASE}640x480/{imageid}/bike.jpeg"')
    # what this project adds comes through one keyword no attribute can be
    rich = huimages.scaled_tag(imageid, "small", options=huimages.TagOptions(
        srcset=True, formats=("webp",)))
    assert rich.startswith("<picture>") and 'type="image/webp"' in rich and " 2x" in rich


@BOTH
def test_nothing_there_answers(old_code):
    assert huimages.get_imagedoc(UNKNOWN) == {}
    assert huimages.get_imagedoc("not-an-id") == {}
    assert huimages.delete_image(UNKNOWN) is None
    assert huimages.scaled_imagedata(UNKNOWN) is None
    assert huimages.scaled_imagedata(UNKNOWN, "240x160") is None
    assert huimages.scaled_dimensions("not-an-id") == (None, None)
    assert huimages.scaled_dimensions(UNKNOWN, "240x160") == (None, None)
    assert huimages.scaled_dimensions("not-an-id", "75x75!") == (75, 75)  # a crop's box

    imageid = huimages.save_image(f.photo_jpeg(300, 200))
    huimages.delete_image(imageid)
    assert huimages.delete_image(imageid) is None  # twice: silent, as in huImages
    assert huimages.get_imagedoc(imageid) == {}
    assert huimages.scaled_imagedata(imageid) is None


@BOTH
def test_the_image_browser_view_at_both_ends_of_the_catalog(old_code):
    """huImages' own view: ``scaled_tag(nextid, "75x75!")`` on whatever get_next_imageid
    answered, at the ends of the catalog too."""
    ids = sorted(huimages.save_image(f.photo_jpeg(200, 150, seed=s), title=f"Photo {s}")
                 for s in range(3))
    for imageid in ids:
        imagetag = '<a href="%s">%s</a>' % (huimages.imageurl(imageid),  # noqa: UP031
                                             huimages.scaled_tag(imageid, "vga"))
        imagedoc = huimages.get_imagedoc(imageid)
        previousid = huimages.get_previous_imageid(imageid)
        nextid = huimages.get_next_imageid(imageid)
        previous = huimages.scaled_tag(previousid, "75x75!")
        following = huimages.scaled_tag(nextid, "75x75!")
        assert imagedoc.get("title", ["ohne Titel"])[-1].startswith("Photo ")
        assert 'width="75" height="75"' in previous and 'width="75" height="75"' in following
        assert imageid in imagetag
    assert huimages.get_previous_imageid(ids[0]) == ids[0]  # the start: itself, not None
    assert huimages.get_next_imageid(ids[-1]) == ids[-1]  # the end: itself
    assert huimages.get_next_imageid(ids[0]) == ids[1]
    start_line = [huimages.scaled_tag(huimages.get_random_imageid(), "150x150!")
                  for _ in range(5)]
    assert all('width="150" height="150"' in tag for tag in start_line)


def test_star_import_gives_the_functions():
    names: dict = {}
    exec("from huimages_wsgi import *", names)  # noqa: S102 - what the view does
    for name in ("save_image", "scaled_tag", "get_imagedoc", "get_next_imageid",
                 "update_metadata", "set_title", "delete_image", "scaled_imagedata"):
        assert callable(names[name]), name


@BOTH
def test_module_settings_are_read_and_assigned(old_code, monkeypatch):
    assert huimages.IMAGESERVERURL == BASE
    imageid = huimages.save_image(f.photo_jpeg(300, 200))
    huimages.IMAGESERVERURL = "https://img.example.org/"
    assert huimages.imageurl(imageid) == f"https://img.example.org/o/{imageid}.jpeg"
    assert huimages.COUCHDB_NAME == old_code.couch_db
    assert huimages.S3BUCKET == old_code.s3_bucket and huimages.COUCHSERVER == old_code.couch_server
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "old-key")  # so monkeypatch restores it
    huimages.AWS_ACCESS_KEY_ID = "AKIAEXAMPLE"
    assert huimages.AWS_ACCESS_KEY_ID == "AKIAEXAMPLE"


def test_assigned_backends_take_effect_on_the_default_store(tmp_path, monkeypatch):
    monkeypatch.setattr(module_api, "_default", None)
    monkeypatch.setattr(module_api, "_overrides", {})
    monkeypatch.setattr(module_api, "_base", None)
    monkeypatch.setenv("HUIMAGES_DATA_DIR", str(tmp_path / "first"))
    first = huimages.save_image(f.photo_jpeg(120, 80, seed=1))
    assert (tmp_path / "first" / "catalog.sqlite3").exists()
    monkeypatch.setenv("HUIMAGES_DATA_DIR", str(tmp_path / "second"))
    huimages.IMAGESERVERURL = "http://second.example/"  # builds the store anew
    assert huimages.get_imagedoc(first) == {}  # the new store: the new data dir
    assert huimages.scaled_imageurl(huimages.save_image(f.photo_jpeg(120, 80, seed=2))) \
        .startswith("http://second.example/150x150/")


# -- stable URLs --------------------------------------------------------------------------


@BOTH
def test_adding_a_title_moves_no_url(old_code):
    photos = {"titled": f.photo_jpeg(300, 200, seed=4), "untitled": f.photo_jpeg(300, 200, seed=5)}
    titled = huimages.save_image(photos["titled"], title="Red bike")
    untitled = huimages.save_image(photos["untitled"], filename="IMG_0042.JPG")
    before = {i: (huimages.scaled_imageurl(i, "240x160"), huimages.scaled_tag(i))
              for i in (titled, untitled)}
    assert before[titled][0] == f"{BASE}240x160/{titled}/red-bike.jpeg"
    assert before[untitled][0] == f"{BASE}240x160/{untitled}/img-0042.jpeg"  # the file's name
    assert 'alt="IMG 0042.JPG"' in before[untitled][1]  # 2.2: the file's name, _ as space
    for name, imageid in (("titled", titled), ("untitled", untitled)):
        huimages.set_title(imageid, "A newer title")
        huimages.update_metadata(imageid, None, "And another")
        huimages.save_image(photos[name], title="Saved again")  # merges one more title
        assert len(huimages.get_imagedoc(imageid)["title"]) >= 3
        assert huimages.scaled_imageurl(imageid, "240x160") == before[imageid][0]
    assert 'alt="A newer title"' not in huimages.scaled_tag(titled)  # the newest: saved last
    assert 'alt="Saved again"' in huimages.scaled_tag(titled)  # alt is the newest title (2.2)


@BOTH
def test_alt_addition_is_appended_as_it_is(any_config, monkeypatch):
    monkeypatch.setattr(module_api, "_default", None)
    huimages.configure(any_config.with_changes(alt_addition=" - HUDORA"))
    imageid = huimages.save_image(f.photo_jpeg(300, 200), title="Red bike")
    assert 'alt="Red bike - HUDORA"' in huimages.scaled_tag(imageid)


# -- TIFF and BMP originals ---------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("fmt", ["TIFF", "BMP"])
def test_tiff_and_bmp_originals(old_code, fmt):
    data = f.encode(f.photo(400, 300), fmt)
    imageid = huimages.save_image(data, filename=f"scan.{fmt.lower()}")
    ext = fmt.lower()
    assert huimages.imageurl(imageid) == f"{BASE}o/{imageid}.{ext}"
    app = make_app(old_code)
    original = get(app, f"/o/{imageid}.{ext}")
    assert original.status_int == 200 and original.body == data  # byte for byte
    assert original.content_type == f"image/{ext}"
    assert original.headers["X-Content-Type-Options"] == "nosniff"
    for variant in ("jpeg", "webp", "png", "avif"):
        answer = get(app, f"/240x160/{imageid}.{variant}")
        assert answer.status_int == 200, (variant, answer.text)
        assert Image.open(io.BytesIO(answer.body)).size == (213, 160)


# -- links ------------------------------------------------------------------------------------

#: Every form huImages' server.py answered that is not a canonical URL here, with the
#: canonical one it moves to ({id}: a JPEG original; {png}: a PNG original).
LINKS = [
    ("/o/{id}", "/o/{id}.jpeg"),
    ("/240x160/{id}", "/240x160/{id}.jpeg"),
    ("/240x160/{id}.jpg", "/240x160/{id}.jpeg"),
    ("/240x160/{id}.jpe", "/240x160/{id}.jpeg"),
    ("/o/{id}.jpg", "/o/{id}.jpeg"),
    ("/o/{id}.jpe", "/o/{id}.jpeg"),
    ("/o/{id}/", "/o/{id}.jpeg"),
    ("/o/{id}/any-name.jpg", "/o/{id}.jpeg"),
    ("/o/{id}/x.png", "/o/{id}.jpeg"),
    ("/o/{id}/a/b.jpeg", "/o/{id}.jpeg"),
    ("/240x160/{id}/a/b.jpeg", "/240x160/{id}.jpeg"),
    ("/075x075/{id}.jpeg", "/75x75/{id}.jpeg"),
    ("/075x075!/{id}.jpeg", "/75x75!/{id}.jpeg"),
    ("/o/{png}.jpeg", "/o/{png}.png"),
    ("/o/{png}", "/o/{png}.png"),
]


@BOTH
def test_every_huimages_link_moves_to_the_same_variant(old_code):
    app = make_app(old_code)
    ids = {"id": huimages.save_image(f.photo_jpeg(400, 300), title="Bike"),
           "png": huimages.save_image(f.palette_png(120, 80))}
    for old, new in LINKS:
        old, new = old.format(**ids), new.format(**ids)
        answer = get(app, old)
        assert answer.status_int == 301, (old, answer.status, answer.text)
        assert answer.location == f"http://localhost{new}", old
        assert answer.cache_control.max_age > 0
        assert get(app, new).status_int == 200, new
    # the query string goes along; HEAD is answered too
    assert get(app, f"/o/{ids['id']}?x=1").location.endswith(f"/o/{ids['id']}.jpeg?x=1")
    head = Request.blank(f"/240x160/{ids['id']}", method="HEAD").get_response(app)
    assert head.status_int == 301


@BOTH
def test_what_stays_refused(old_code):
    """What this project refuses on purpose (docs/migrating.md): sizes over the largest
    box, methods other than GET and HEAD, unknown images."""
    app = make_app(old_code)
    imageid = huimages.save_image(f.photo_jpeg(300, 200))
    assert get(app, f"/09999x09999/{imageid}.jpeg").status_int == 400
    assert get(app, f"/o/{UNKNOWN}").status_int == 404
    assert Request.blank(f"/o/{imageid}", method="POST").get_response(app).status_int == 405


# -- what huImages left behind, and what must not follow from a link ---------------------


@BOTH
def test_an_original_huimages_stored_without_a_type_moves_to_its_own(old_code):
    """huImages wrote no ``contenttype``: the bytes say it once, the document keeps it."""
    app = make_app(old_code)
    data = f.palette_png(120, 80)
    imageid = huimages.save_image(data)
    app.store.catalog.update(imageid, lambda doc: doc.pop("contenttype"))
    assert "contenttype" not in app.store.catalog.get(imageid)
    for old in (f"/o/{imageid}.jpeg", f"/o/{imageid}", f"/o/{imageid}/drawing.jpg"):
        answer = get(app, old)
        assert (answer.status_int, answer.location) == (
            301, f"http://localhost/o/{imageid}.png"), (old, answer.text)
    assert get(app, f"/o/{imageid}.png").body == data
    assert app.store.catalog.get(imageid)["contenttype"] == "image/png"
    assert huimages.imageurl(imageid).endswith(f"/o/{imageid}.png")
    assert huimages.scaled_imageurl(imageid, "o").endswith(".png")  # as imageurl
    assert huimages.scaled_imagedata(imageid, "o") == data


@BOTH
def test_saving_a_huimages_document_again_keeps_its_url(old_code):
    """A document without ``seo_name`` (huImages', or one saved before names were
    recorded) keeps the name its first title or file gives it, whatever is saved next."""
    app = make_app(old_code)
    titled = f.photo_jpeg(300, 200, seed=7)
    untitled = f.photo_jpeg(300, 200, seed=8)
    first = huimages.save_image(titled, title="Red bike")
    second = huimages.save_image(untitled, filename="test.jpeg")
    for imageid in (first, second):
        app.store.catalog.update(imageid, lambda doc: doc.pop("seo_name"))
    before = [huimages.scaled_imageurl(i) for i in (first, second)]
    assert before == [f"{BASE}150x150/{first}/red-bike.jpeg",
                      f"{BASE}150x150/{second}/test.jpeg"]
    huimages.save_image(titled, title="Blue bike", filename="other.jpeg")
    huimages.save_image(untitled, title="Now titled", filename="other.jpeg")
    assert [huimages.scaled_imageurl(i) for i in (first, second)] == before
    assert 'alt="Now titled"' in huimages.scaled_tag(second)  # alt: the newest title


@BOTH
def test_timestamps_are_times(old_code):
    imageid = huimages.save_image(f.photo_jpeg(120, 80), timestamp=datetime.date(2009, 1, 29))
    assert huimages.get_imagedoc(imageid)["ctime"] == "20090129T000000.000000"
    assert huimages.update_metadata(imageid, True) == imageid  # huImages: any true value is now
    assert huimages.get_imagedoc(imageid)["mtime"] > "2020"
    with pytest.raises(InvalidTimestamp):
        huimages.update_metadata(imageid, "yesterday")
    assert huimages.get_imagedoc(imageid)["ctime"] == "20090129T000000.000000"
    with pytest.raises(TypeError):
        huimages.IMAGESERVERURL = 42


def test_a_redirect_never_leaves_this_server(tmp_path):
    """A front that cleans PATH_INFO but passes the raw REQUEST_URI (Apache, uWSGI) must
    not turn ``//evil.example/../<old link>`` into a Location on another site."""
    app = make_app(Config(data_dir=tmp_path / "data"))
    imageid = app.store.save_image(f.photo_jpeg(120, 80))
    request = Request.blank(f"/240x160/{imageid}")
    request.environ["REQUEST_URI"] = f"//evil.example/../240x160/{imageid}?a=1%0d%0aX:%20y"
    request.environ["QUERY_STRING"] = "a=1\r\nX: y"
    answer = request.get_response(app)
    assert answer.status_int == 301
    assert answer.location == f"http://localhost/240x160/{imageid}.jpeg?a=1%0D%0AX:%20y"
    mounted = Request.blank(f"/img/o/{imageid}", base_url="http://localhost/app")
    inner = make_app(Config(data_dir=tmp_path / "data"))
    host = ImageMiddleware(None, prefix="/img", store=inner.store)
    assert mounted.get_response(host).location == f"http://localhost/app/img/o/{imageid}.jpeg"


def test_tiff_with_a_rare_compression_is_refused(tmp_path):
    store = make_app(Config(data_dir=tmp_path / "data")).store
    for compression in ("zstd", "lzma"):
        data = io.BytesIO()
        f.photo(64, 48).save(data, "TIFF", compression=compression)
        with pytest.raises(InvalidImage, match="TIFF compression"):
            store.save_image(data.getvalue())
    data = io.BytesIO()
    f.photo(64, 48).save(data, "TIFF", compression="tiff_deflate")
    assert store.save_image(data.getvalue())  # the common ones are taken
