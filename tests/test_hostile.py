"""Hostile input: arbitrary paths, headers and files never produce a 500."""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webob import Request

from huimages_wsgi import Config, make_app

from . import imagefactory as f

ALLOWED = {200, 304, 400, 403, 404, 405, 413, 503}


@pytest.fixture(scope="module")
def hostile_app(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    app = make_app(Config(data_dir=root / "data", secret="hostile-secret"))
    imageid = app.store.save_image(f.solid_jpeg(120, 90))
    signed = app.store.scaled_imageurl(imageid, "40x40").split("127.0.0.1:8080")[1]
    Request.blank(signed).get_response(app)  # one cached variant to hit
    outside = root / "secret.txt"
    outside.write_text("top secret")
    os.symlink(outside, app.config.cache_root / "40x40" / "LINK.jpeg")
    os.symlink(outside, app.config.cache_root / "40x40" / f"{'B' * 32}01.jpeg")
    return app, imageid


segments = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=40),
    st.sampled_from(["o", "75x75!", "40x40", "square", "..", ".", "", "%2e%2e", "\x00",
                     "A" * 32 + "01", "A" * 32 + "01.jpeg", "x.jpeg", "..%2f..%2fetc%2fpasswd",
                     "LINK.jpeg", ".locks", "9999999x1"]),
)
paths = st.lists(segments, min_size=0, max_size=5).map(lambda parts: "/" + "/".join(parts))
header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=60)
methods = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "BREW"])


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=paths, method=methods, inm=header_values, ims=header_values, rng=header_values,
       query=header_values, with_id=st.booleans(), size=st.sampled_from(["40x40", "o", "12x12!"]))
def test_arbitrary_requests_get_only_clean_statuses(hostile_app, path, method, inm, ims, rng,
                                                    query, with_id, size):
    app, imageid = hostile_app
    if with_id:
        path = f"/{size}/{imageid}{path}"
    request = Request.blank("/")
    request.environ.update(
        PATH_INFO=path, REQUEST_METHOD=method, QUERY_STRING=query.encode("latin-1", "replace")
        .decode("latin-1"), HTTP_IF_NONE_MATCH=inm, HTTP_IF_MODIFIED_SINCE=ims, HTTP_RANGE=rng,
    )
    response = request.get_response(app)
    assert response.status_int in ALLOWED, (path, response.status, response.body[:200])
    if response.status_int == 200 and method == "GET":
        assert response.body != b"top secret"


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
