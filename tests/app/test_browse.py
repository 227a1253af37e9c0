"""The browse page over WSGI: pages, who may upload, and clean errors for bad input.

The same pages in a real browser, against real servers, are in test_browse_e2e.py.
"""

import html
import io
import json
import re
import secrets
import urllib.error
import urllib.request
from urllib.parse import urljoin

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from webob import Request

from huimages_wsgi import Config, make_app
from huimages_wsgi.storage import Catalog
from huimages_wsgi.storage.couch import CouchCatalog

from .. import imagefactory as f
from ..conftest import LiveServer

HOST = "127.0.0.1:8080"
LOCAL = {"REMOTE_ADDR": "127.0.0.1"}
TOKEN = "browse-token-0123456789"


@pytest.fixture
def browse_app(tmp_path):
    return make_app(Config(data_dir=tmp_path / "data", browse=True))


@pytest.fixture
def token_app(tmp_path):
    return make_app(Config(data_dir=tmp_path / "data", browse=True, upload_token=TOKEN))


REMOTE = {"REMOTE_ADDR": "192.0.2.7", "HTTP_HOST": "images.example.com"}
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def login(app, token=TOKEN, environ=None, headers=None, mount="/_browse"):
    """The token form's post: its answer (a 303 with the session cookie, or why not)."""
    environ = {**LOCAL, "HTTP_HOST": HOST, **(environ or {})}
    request = Request.blank(f"{mount}/login", POST={"token": token}, environ=environ,
                            headers=headers)
    return request.get_response(app)


def session(app, environ=None, mount="/_browse") -> dict[str, str]:
    """A ``Cookie`` header of a session the token form opened."""
    response = login(app, environ=environ, mount=mount)
    assert response.status_int == 303, response.text
    assert response.location.endswith(f"{mount}/")
    cookie = response.headers["Set-Cookie"]
    for attribute in ("HttpOnly", "SameSite=Strict", f"Path={mount or '/'}", "Max-Age="):
        assert attribute.lower() in cookie.lower(), cookie
    return {"Cookie": cookie.split(";", 1)[0]}


class Unreadable:
    """A request body that fails the test when anyone reads it."""

    def read(self, *args):
        raise AssertionError("the body of a refused post was read")

    readline = readlines = read


def get(app, path, environ=None, **kwargs):
    request = Request.blank(path, environ={**LOCAL, "HTTP_HOST": HOST, **(environ or {})}, **kwargs)
    return request.get_response(app)


def post_upload(app, data=None, title="", token=None, filename="photo.jpg", environ=None,
                headers=None):
    fields = {"title": title}
    if data is not None:
        fields["file"] = (filename, data)
    if token is not None:
        fields["token"] = token
    environ = {**LOCAL, "HTTP_HOST": HOST, **(environ or {})}
    request = Request.blank("/_browse/upload", POST=fields, environ=environ, headers=headers)
    return request.get_response(app)


def upload(app, data, title="", **kwargs) -> str:
    response = post_upload(app, data, title, **kwargs)
    assert response.status_int == 303, response.text
    match = re.fullmatch(r"http://[^/]+/_browse/([A-Z0-9]{34})", response.location)
    assert match, response.location
    return match.group(1)


def test_empty_index_offers_the_form(browse_app):
    response = get(browse_app, "/_browse/")
    assert response.status_int == 200 and response.content_type == "text/html"
    assert "No images yet" in response.text
    assert 'enctype="multipart/form-data"' in response.text and 'name="token"' not in response.text
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    assert get(browse_app, "/_browse/", method="HEAD").status_int == 200


def test_upload_then_detail_page_then_index(browse_app):
    imageid = upload(browse_app, f.photo_jpeg(900, 600), title='Bike <script>"x"</script>')
    detail = get(browse_app, f"/_browse/{imageid}")
    assert detail.status_int == 200
    assert "<script>" not in detail.text and "Bike &lt;script&gt;" in detail.text
    assert '<source type="image/avif"' in detail.text and 'id="image"' in detail.text
    # every image URL on the page is relative and is served by the same app
    sources = re.findall(r'(?:src|srcset)="([^" ]+)', detail.text)
    assert sources and all(src.startswith("../") for src in sources)
    for src in sources:
        url = urljoin(f"http://{HOST}/_browse/{imageid}", src)
        image = get(browse_app, url.removeprefix(f"http://{HOST}"))
        assert image.status_int == 200, url
        Image.open(io.BytesIO(image.body)).load()
    index = get(browse_app, "/_browse/")
    assert f'href="{imageid}"' in index.text and 'class="thumb"' in index.text
    assert f"../150x150!/{imageid}/bike-script-x-script.jpeg" in index.text


def test_previous_next_and_random(browse_app):
    ids = sorted(upload(browse_app, f.solid_jpeg(colour=(i * 60, 20, 20))) for i in range(3))
    middle = get(browse_app, f"/_browse/{ids[1]}").text
    assert f'id="prev" rel="prev" href="{ids[0]}"' in middle
    assert f'id="next" rel="next" href="{ids[2]}"' in middle
    first = get(browse_app, f"/_browse/{ids[0]}").text
    assert 'id="prev"' not in first and 'id="next"' in first
    random = get(browse_app, "/_browse/random")
    assert random.status_int == 303 and random.location.rsplit("/", 1)[1] in ids


def store_title_as_is(catalog: Catalog, imageid: str, title: str) -> None:
    """Write ``title`` unchecked, the way older servers or other CouchDB clients could.

    couchdb-python cannot encode a lone surrogate, so on CouchDB the document
    goes in as JSON text with the escape, straight over HTTP.
    """
    if not isinstance(catalog, CouchCatalog):
        catalog.update(imageid, lambda doc: doc.update(title=[title]))
        return
    doc = {**catalog.get(imageid), "title": [title]}
    request = urllib.request.Request(
        f"{catalog.url}{catalog.dbname}/{imageid}", data=json.dumps(doc).encode("ascii"),
        method="PUT", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).close()


@pytest.mark.parametrize("backend", ["embedded", "disk+couch"], indirect=True)
def test_titles_with_lone_surrogates_do_not_break_the_pages(any_config):
    """Stored before the API refused them, or written straight into the catalog: such
    text cannot be encoded as UTF-8, and once made every page showing it a 500."""
    app = make_app(any_config.with_changes(browse=True))
    imageid = app.store.save_image(f.solid_jpeg())
    bad = "Caf\udce9 <b>\ud800"  # what surrogateescape makes of Latin-1 bytes, and worse
    store_title_as_is(app.store.catalog, imageid, bad)
    assert app.store.catalog.get(imageid)["title"] == [bad]  # the catalog really holds it
    for path in ("/_browse/", f"/_browse/{imageid}"):
        response = get(app, path)
        assert response.status_int == 200, (path, response.text[-300:])
        assert "Caf\ufffd &lt;b&gt;\ufffd" in response.text, path
        for src in re.findall(r'src="([^"]+)"', response.text):
            url = urljoin(f"http://{HOST}{path}", src).removeprefix(f"http://{HOST}")
            assert get(app, url).status_int == 200, url


def test_redirects_on_an_empty_store_and_without_the_slash(browse_app):
    assert get(browse_app, "/_browse/random").location == f"http://{HOST}/_browse/"
    bare = get(browse_app, "/_browse")
    assert bare.status_int == 301 and bare.location == f"http://{HOST}/_browse/"


@pytest.mark.parametrize(
    "environ, headers",
    [
        ({"REMOTE_ADDR": "192.0.2.7"}, {}),  # another machine
        ({}, {"X-Forwarded-For": "192.0.2.7"}),  # through a proxy on this machine
        ({}, {"Forwarded": "for=192.0.2.7"}),
        ({"HTTP_HOST": "rebound.example:8080"}, {}),  # DNS rebinding onto 127.0.0.1
        ({"REMOTE_ADDR": ""}, {}),  # a unix socket: nobody known
    ],
)
def test_without_a_token_only_local_direct_clients_may_browse_and_upload(
        browse_app, environ, headers):
    imageid = upload(browse_app, f.solid_jpeg(), "Private")
    response = post_upload(browse_app, f.solid_jpeg(), environ=environ, headers=headers)
    assert response.status_int == 403 and "HUIMAGES_UPLOAD_TOKEN" in response.text
    for path in ("/_browse/", f"/_browse/{imageid}", "/_browse/random", "/_browse/login"):
        page = get(browse_app, path, environ=environ, headers=headers)
        assert page.status_int == 403, path
        assert "HUIMAGES_UPLOAD_TOKEN" in page.text and "<form" not in page.text
        assert imageid not in page.text and "Private" not in page.text
    assert len(browse_app.store.recent_ids(10)) == 1


def test_local_clients_by_name_and_ipv6(browse_app):
    upload(browse_app, f.solid_jpeg(), environ={"HTTP_HOST": "localhost:8080"})
    upload(browse_app, f.solid_jpeg(colour=(1, 2, 3)),
           environ={"REMOTE_ADDR": "::1", "HTTP_HOST": "[::1]:8080"})


@pytest.mark.parametrize("environ", [LOCAL, REMOTE, {"HTTP_X_FORWARDED_FOR": "192.0.2.7"}])
def test_a_configured_token_is_required_from_everyone(token_app, environ):
    """Pages, next/previous and uploads: the token (its session cookie or a bearer
    header) from everyone, local clients included; without it a 401 and the token form."""
    imageid = token_app.store.save_image(f.solid_jpeg(), title="Private")
    for path in ("/_browse/", f"/_browse/{imageid}", "/_browse/random", "/_browse/login"):
        page = get(token_app, path, environ=environ)
        assert page.status_int == 401, path
        assert page.headers["WWW-Authenticate"].startswith("Bearer")
        assert 'id="login"' in page.text and 'id="upload"' not in page.text
        assert imageid not in page.text and "Private" not in page.text
    for token in ("", "wrong", TOKEN[:-1], TOKEN + "x"):
        response = login(token_app, token, environ=environ)
        assert response.status_int == 403 and "Wrong token" in response.text
        assert "Set-Cookie" not in response.headers
    assert post_upload(token_app, f.solid_jpeg(), environ=environ).status_int == 401
    assert post_upload(token_app, f.solid_jpeg(), token=TOKEN,  # a field is no way in
                       environ=environ).status_int == 401
    for number, credentials in enumerate((session(token_app, environ), BEARER)):
        index = get(token_app, "/_browse/", environ=environ, headers=credentials)
        assert index.status_int == 200 and 'id="upload"' in index.text and imageid in index.text
        assert 'name="token"' not in index.text
        assert get(token_app, f"/_browse/{imageid}", environ=environ,
                   headers=credentials).status_int == 200
        assert get(token_app, "/_browse/login", environ=environ,
                   headers=credentials).status_int == 303
        upload(token_app, f.solid_jpeg(colour=(90 * number, 0, 0)), headers=credentials,
               environ=environ)


def test_a_session_ends_with_its_time_and_with_the_token(tmp_path):
    from huimages_wsgi.web.auth import SESSION_SECONDS
    from huimages_wsgi.web.browse import BrowseApp

    store = make_app(Config(data_dir=tmp_path / "d", upload_token=TOKEN)).store
    now = [1_000_000.0]
    app = BrowseApp(store, clock=lambda: now[0])  # mounted nowhere: its pages at /
    cookie = session(app, mount="")
    assert get(app, "/", headers=cookie).status_int == 200
    now[0] += SESSION_SECONDS - 1
    assert get(app, "/", headers=cookie).status_int == 200
    now[0] += 1
    assert get(app, "/", headers=cookie).status_int == 401  # expired
    now[0] = 1_000_000.0
    other = BrowseApp(make_app(Config(data_dir=tmp_path / "d",
                                      upload_token="another-token-0123456789")).store,
                      clock=lambda: now[0])
    assert get(other, "/", headers=cookie).status_int == 401  # another token's session
    expires, _, mac = cookie["Cookie"].partition("=")[2].partition(".")
    for forged in (f"{int(expires) + 3600}.{mac}", f"{expires}.{'A' * len(mac)}", expires,
                   "9" * 20 + "." + mac, "x" * 500):
        assert get(app, "/", headers={"Cookie": f"huimages_browse={forged}"}).status_int == 401


def test_refused_posts_are_answered_before_a_byte_of_the_body_is_read(token_app, browse_app):
    """An upload from someone not allowed, declared at 50 MB, is refused unread; the token
    form's post is the one body read before knowing who asks, and only up to 4 KB."""
    big = str(50 << 20)
    cases = [
        (token_app, "/_browse/upload", LOCAL, big, 401),
        (browse_app, "/_browse/upload", REMOTE, big, 403),
        (token_app, "/_browse/", LOCAL, big, 401),
        (token_app, "/_browse/login", LOCAL, big, 413),
        (token_app, "/_browse/login", LOCAL, "4097", 413),
        (browse_app, "/_browse/login", REMOTE, big, 403),
    ]
    for app, path, environ, length, status in cases:
        request = Request.blank(path, method="POST", environ={
            **environ, "CONTENT_TYPE": "multipart/form-data; boundary=x",
            "CONTENT_LENGTH": length, "wsgi.input": Unreadable()})
        response = request.get_response(app)
        assert response.status_int == status, (path, length, response.text)
    chunked = Request.blank("/_browse/login", method="POST", environ={
        **LOCAL, "HTTP_TRANSFER_ENCODING": "chunked",
        "wsgi.input": io.BytesIO(b"token=" + b"x" * 10_000)})
    assert chunked.get_response(token_app).status_int == 413


def test_cross_site_posts_are_refused(token_app):
    cookie = session(token_app)
    evil = {"Origin": "https://evil.example"}
    response = post_upload(token_app, f.solid_jpeg(), headers={**cookie, **evil})
    assert response.status_int == 403 and "own page" in response.text
    assert login(token_app, headers=evil).status_int == 403
    same = post_upload(token_app, f.solid_jpeg(), headers={**cookie, "Origin": f"http://{HOST}"})
    assert same.status_int == 303


def test_with_a_secret_every_link_on_the_pages_is_signed_and_served(tmp_path):
    """The thumbnails, the detail's <picture> (AVIF, WebP, JPEG, 1x and 2x) and the
    original: each URL carries the signature of its own size and format."""
    app = make_app(Config(data_dir=tmp_path / "d", browse=True,
                          secret="browse-secret-0123456789"))
    imageid = upload(app, f.photo_jpeg(1200, 800), "Signed bike")
    index = get(app, "/_browse/")
    detail = get(app, f"/_browse/{imageid}")
    assert 'id="original"' in detail.text
    for page, path in ((index, "/_browse/"), (detail, f"/_browse/{imageid}")):
        urls = [u for attr in re.findall(r'(?:src|srcset|href)="([^"]+)"', page.text)
                for u in re.findall(r"(\.\./[^ ,]+)", html.unescape(attr))]
        assert urls and all("?sig=" in url for url in urls), urls
        for url in urls:
            answer = get(app, urljoin(f"http://{HOST}{path}", url).removeprefix(f"http://{HOST}"))
            assert answer.status_int == 200, url
    assert len([u for u in re.findall(r'srcset="([^"]+)"', detail.text)]) >= 3


def test_bad_uploads_get_their_status_and_the_form_again(tmp_path):
    app = make_app(Config(data_dir=tmp_path / "d", browse=True, max_upload_bytes=20_000))
    cases = [
        (f.tga_image(), 415, "only JPEG, PNG"),
        (b"hello, not an image", 415, "photo.jpg"),
        (f.photo_jpeg(800, 600), 413, "limit"),
        (f.declared_size_jpeg(30000, 30000), 413, "pixels"),
        (b"", 400, "empty"),
        (None, 400, "Choose a JPEG"),
    ]
    for data, status, message in cases:
        response = post_upload(app, data)
        assert response.status_int == status, (status, response.text)
        assert response.content_type == "text/html" and message in response.text
        assert 'role="alert"' in response.text and "<form" in response.text
    huge = post_upload(app, b"\xff" * 200_000)  # refused on Content-Length alone
    assert huge.status_int == 413
    assert "No images yet" in get(app, "/_browse/").text


def test_methods_and_unknown_pages(browse_app):
    assert get(browse_app, "/_browse/upload").status_int == 405
    assert get(browse_app, "/_browse/upload").headers["Allow"] == "POST"
    assert get(browse_app, "/_browse/", method="POST").status_int == 405
    assert get(browse_app, "/_browse/" + "A" * 32 + "01").status_int == 404
    assert get(browse_app, "/_browse/not-an-id").status_int == 400
    assert get(browse_app, "/_browse/a/b").status_int == 404
    missing = get(browse_app, "/_browse/" + "A" * 32 + "01")
    assert missing.content_type == "text/html" and "no image" in missing.text


def test_off_unless_configured(tmp_path):
    app = make_app(Config(data_dir=tmp_path / "data"))
    assert get(app, "/_browse/").status_int == 404


def test_unknown_form_fields_and_a_file_where_text_belongs(token_app):
    request = Request.blank("/_browse/upload", environ=LOCAL, headers=BEARER, POST={
        "token": ("token.txt", TOKEN.encode()), "title": ("t.txt", b"x"), "file": ("a.jpg", b"x")})
    request.host = HOST
    response = request.get_response(token_app)
    assert response.status_int == 415 and "a.jpg" in response.text


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tail=st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=40),
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]),
    content_type=st.sampled_from(["", "multipart/form-data", "multipart/form-data; boundary=x",
                                  "application/x-www-form-urlencoded", "text/plain"]),
    body=st.binary(max_size=200),
)
def test_hostile_requests_never_get_a_500(browse_app, tail, method, content_type, body):
    request = Request.blank("/")
    request.environ.update(PATH_INFO="/_browse/" + tail, REQUEST_METHOD=method, **LOCAL)
    request.host = HOST
    if method == "POST":
        request.environ["CONTENT_TYPE"] = content_type
        request.body = body
    response = request.get_response(browse_app)
    assert response.status_int in {200, 301, 303, 400, 403, 404, 405, 411, 413, 415}, (
        tail, method, response.status, response.text[-300:])


def test_serve_turns_browse_on_for_the_embedded_default_only(tmp_path, s3_server, couch_server):
    shared = {
        **s3_server.env,
        "HUIMAGES3BUCKET": s3_server.create_bucket(),
        "HUIMAGESCOUCHSERVER": couch_server.url,
        "HUIMAGES_COUCHDB_NAME": f"huimages_browse_{secrets.token_hex(4)}",
    }
    cases = [({}, 200), ({"HUIMAGES_BROWSE": "0"}, 404), (shared, 404),
             ({**shared, "HUIMAGES_BROWSE": "yes"}, 200)]
    for number, (env, expected) in enumerate(cases):
        server = LiveServer(tmp_path / f"node{number}" / "data", env, workers=1).start()
        try:
            assert status(f"{server.url}/_browse/") == expected, env
        finally:
            server.stop()


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_each_page_reads_each_document_once(browse_app):
    """On CouchDB every catalog read is a round trip: the index must not read twice."""
    ids = [upload(browse_app, f.solid_jpeg(colour=(50 * i, 20, 20)), f"n{i}") for i in range(3)]
    catalog = browse_app.store.catalog
    reads: list[str] = []
    real_get = catalog.get
    catalog.get = lambda imageid: reads.append(imageid) or real_get(imageid)
    try:
        assert get(browse_app, "/_browse/").status_int == 200
        assert sorted(reads) == sorted(ids)
        reads.clear()
        assert get(browse_app, f"/_browse/{ids[1]}").status_int == 200
        assert reads == [ids[1]]
    finally:
        del catalog.get
