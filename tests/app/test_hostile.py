"""Hostile input: arbitrary paths, headers and files never produce a 500."""

import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webob import Request

from huimages_wsgi import Config, make_app
from huimages_wsgi.core.errors import ImageNotFound

from .. import imagefactory as f

# 206 and 416 answer Range requests (RFC 9110); 416 only for a range past the end.
ALLOWED = {200, 206, 301, 304, 400, 403, 404, 405, 412, 413, 416, 503}  # 301: huImages' links


@pytest.fixture(scope="module")
def hostile_app(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    app = make_app(Config(data_dir=root / "data", secret="hostile-secret-0123"))
    imageid = app.store.save_image(f.solid_jpeg(120, 90))
    signed = app.store.scaled_imageurl(imageid, "40x40").split("127.0.0.1:8080")[1]
    Request.blank(signed).get_response(app)  # one cached variant to hit
    outside = root / "secret.txt"
    outside.write_text("top secret")
    os.symlink(outside, app.config.cache_root / "40x40" / "LINK.jpeg")
    os.symlink(outside, app.config.cache_root / "40x40" / f"{'B' * 32}01.jpeg")
    return app, imageid


@pytest.fixture(scope="module")
def open_app(tmp_path_factory):
    """No secret: every fuzzed miss reaches the generating path."""
    root = tmp_path_factory.mktemp("hostile-open")
    app = make_app(Config(data_dir=root / "data", max_dimension=400))
    return app, app.store.save_image(f.solid_jpeg(120, 90))


segments = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=40),
    st.sampled_from(["o", "75x75!", "40x40", "square", "..", ".", "", "%2e%2e", "\x00",
                     "A" * 32 + "01", "A" * 32 + "01.jpeg", "x.jpeg", "..%2f..%2fetc%2fpasswd",
                     "LINK.jpeg", ".locks", "9999999x1"]),
)
paths = st.lists(segments, min_size=0, max_size=5).map(lambda parts: "/" + "/".join(parts))
header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=60)
dates = st.sampled_from(["Mon, 01 Jan 99999 00:00:00 GMT", "Mon, 32 Foo 2020 99:99:99 GMT",
                         '"x" GMT', "W/\"x\" GMT", " GMT",
                         "Thu, 01 Jan 1970 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT",
                         "Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT"])
ranges = st.sampled_from(["bytes=0-1", "bytes=-5", "bytes=5-", "bytes=99999999-", "bytes=1-0",
                          "bytes=0-1,4-5", "bytes=", "items=0-1"])
etags = st.sampled_from(['"x"', 'W/"x"', "*", '"', ""])
# Each header is absent or one of: arbitrary text, a (bad or good) date, a range, an entity tag.
headers = st.one_of(st.none(), header_values, dates, ranges, etags)
methods = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "BREW"])
HEADER_NAMES = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE", "HTTP_IF_UNMODIFIED_SINCE",
                "HTTP_IF_RANGE", "HTTP_RANGE", "HTTP_IF_MATCH")


def _hostile_request(app, path, method, query, header_list):
    request = Request.blank("/")
    request.environ.update(
        PATH_INFO=path, REQUEST_METHOD=method,
        QUERY_STRING=query.encode("latin-1", "replace").decode("latin-1"),
    )
    for name, value in zip(HEADER_NAMES, header_list, strict=True):
        if value is not None:
            request.environ[name] = value
    response = request.get_response(app)
    assert response.status_int in ALLOWED, (path, response.status, response.body[:200])
    if response.status_int == 200 and method == "GET":
        assert response.body != b"top secret"
    if response.status_int == 301:  # to a canonical image URL on this server, nowhere else
        assert re.fullmatch(r"http://localhost(:80)?/[a-z0-9!]+/[A-Z2-7]{32}[0-9]{2}\.[a-z]+"
                            r"(\?.*)?", response.location), response.location
    return response


FUZZ = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(path=paths, method=methods, query=header_values,
       header_list=st.tuples(*[headers] * len(HEADER_NAMES)), with_id=st.booleans(),
       size=st.sampled_from(["40x40", "o", "12x12!"]))
def test_arbitrary_requests_get_only_clean_statuses(hostile_app, path, method, query,
                                                    header_list, with_id, size):
    """Signed app: hits (the fast path, when no Range is sent) and refused misses."""
    app, imageid = hostile_app
    if with_id:
        path = f"/{size}/{imageid}{path}"
    _hostile_request(app, path, method, query, header_list)


@FUZZ
@given(method=st.sampled_from(["GET", "HEAD"]), query=header_values,
       header_list=st.tuples(*[headers] * len(HEADER_NAMES)),
       size=st.one_of(st.sampled_from(["o", "square", "thumb", "401x1", "0x0", "1x1!"]),
                      st.builds("{}x{}{}".format, st.integers(0, 500), st.integers(0, 500),
                                st.sampled_from(["", "!"]))),
       ext=st.sampled_from(["jpeg", "webp", "png", "avif", "gif"]),
       seo=st.one_of(st.none(), header_values))
def test_arbitrary_generating_requests_get_only_clean_statuses(open_app, method, query,
                                                               header_list, size, ext, seo):
    """No secret: sizes, formats, SEO names and headers on the path that renders."""
    app, imageid = open_app
    path = f"/{size}/{imageid}.{ext}" if seo is None else f"/{size}/{imageid}/{seo}.{ext}"
    response = _hostile_request(app, path, method, query, header_list)
    if response.status_int == 200 and method == "GET" and ext == "jpeg":
        assert response.body[:2] == b"\xff\xd8"


def test_range_with_an_unusable_if_range_gets_the_whole_image(hostile_app):
    app, imageid = hostile_app
    signed = app.store.scaled_imageurl(imageid, "40x40").split("127.0.0.1:8080")[1]
    whole = Request.blank(signed).get_response(app)
    for if_range in ("Mon, 01 Jan 99999 00:00:00 GMT", "Mon, 32 Foo 2020 99:99:99 GMT", "x",
                     '"x" GMT'):
        request = Request.blank(signed, headers={"Range": "bytes=0-1", "If-Range": if_range})
        response = request.get_response(app)
        assert response.status_int == 200 and response.body == whole.body, if_range
    assert Request.blank(signed, headers={"Range": "bytes=0-1"}).get_response(
        app).status_int == 206


@pytest.mark.parametrize("name", ["LINK.jpeg", "B" * 32 + "01.jpeg"])
def test_symlink_out_of_the_cache_is_not_followed_to_serve(hostile_app, name):
    app, _ = hostile_app
    response = Request.blank(f"/40x40/{name}").get_response(app)
    assert response.status_int in (400, 404) and b"top secret" not in response.body


@pytest.mark.parametrize("path", [
    "/../../etc/passwd", "/o/../../etc/passwd.jpeg", "/o/%2e%2e/%2e%2e/etc/passwd.jpeg",
    "/..%2f..%2fetc%2fpasswd", "/o/\x00.jpeg", "//etc/passwd", "/o//etc/passwd.jpeg",
    "/.locks/0001.jpeg", "/o/.ABC.jpeg.tmp",
])
def test_traversal_attempts(hostile_app, path):
    app, _ = hostile_app
    request = Request.blank("/")
    request.environ["PATH_INFO"] = path
    response = request.get_response(app)
    assert response.status_int in (400, 404)


def test_symlinked_size_directory_is_neither_read_nor_written(hostile_app, tmp_path):
    """O_NOFOLLOW covers only the file name; a planted directory link must not count either."""
    app, imageid = hostile_app
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / f"{imageid}.jpeg").write_bytes(f.solid_jpeg(20, 20))  # looks like a variant
    os.symlink(outside, app.config.cache_root / "20x20")
    os.symlink(outside, app.config.cache_root / "30x30")
    for size in ("20x20", "30x30"):
        url = app.store.scaled_imageurl(imageid, size).split("127.0.0.1:8080")[1]
        for method in ("GET", "HEAD"):
            response = Request.blank(url, method=method).get_response(app)
            assert response.status_int == 404, (size, method, response.status)
    for size in ("20x20", "30x30"):  # the client API goes through the same cache lookup
        with pytest.raises(ImageNotFound):
            app.store.scaled_imagedata(imageid, size)
    assert sorted(p.name for p in outside.iterdir()) == [f"{imageid}.jpeg"]  # nothing written
