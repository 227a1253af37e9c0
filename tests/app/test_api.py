"""The HTTP upload API (/_api), in-process on the embedded default and on S3+CouchDB,
then end to end against a real ``huimages serve`` with curl-like requests."""

from __future__ import annotations

import http.client
import io
import json
import urllib.error
import urllib.request
import uuid
from urllib.parse import quote

import pytest
from PIL import Image
from webob import Request

from huimages_wsgi import make_app

from .. import imagefactory as f
from ..conftest import LiveServer

TOKEN = "s3cret-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BOTH = pytest.mark.parametrize("backend", ["embedded", "s3+couch"], indirect=True)


@pytest.fixture
def api(any_config):
    return make_app(any_config.with_changes(upload_token=TOKEN, max_upload_bytes=200_000))


def call(app, path, method="GET", body=None, headers=None, **kwargs):
    request = Request.blank(path, method=method, headers={**AUTH, **(headers or {})}, **kwargs)
    if body is not None:
        request.body = body
    return request.get_response(app)


def upload(app, data, query="", content_type="image/jpeg", headers=None):
    headers = {"Content-Type": content_type, **(headers or {})}
    return call(app, f"/_api/images{query}", "POST", data, headers)


def multipart(fields: dict[str, str], filename: str, data: bytes) -> tuple[str, bytes]:
    """What ``curl -F file=@photo.jpg -F title=...`` sends."""
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode() + b"\r\n")
    out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
              f'filename="{filename}"\r\nContent-Type: image/jpeg\r\n\r\n'.encode())
    out.write(data + f"\r\n--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", out.getvalue()


# -- the happy paths, on both backends --------------------------------------------------


@BOTH
def test_raw_upload_answers_201_with_id_dimensions_and_urls(api):
    data = f.photo_jpeg(400, 300)
    response = upload(api, data, "?title=Red%20bike&type=product_image")
    assert response.status_int == 201, response.body
    body = response.json
    imageid = body["id"]
    assert (body["width"], body["height"], body["length"]) == (400, 300, len(data))
    assert body["urls"]["o"] == f"http://img.example.test/o/{imageid}.jpeg"
    assert body["urls"]["square"] == f"http://img.example.test/75x75!/{imageid}/red-bike.jpeg"
    assert response.headers["Location"].endswith(f"/_api/images/{imageid}")
    assert response.cache_control.no_store
    served = Request.blank(f"/75x75!/{imageid}/red-bike.jpeg").get_response(api)
    assert served.status_int == 200 and Image.open(io.BytesIO(served.body)).size == (75, 75)

    endpoint = getattr(api, "app", api).routes["_api"]  # under the instrumentation
    reads, catalog_get = [], api.store.catalog.get
    api.store.catalog.get = lambda *args: reads.append(args) or catalog_get(*args)
    assert endpoint.summary(imageid)["urls"] == body["urls"]
    assert len(reads) == 1  # the upload's answer reads the catalog once
    api.store.catalog.get = catalog_get

    again = upload(api, data, "?title=Blue%20bike")
    assert again.status_int == 200 and again.json["id"] == imageid  # same bytes, same image
    assert api.store.get_imagedoc(imageid)["title"] == ["Red bike", "Blue bike"]


@BOTH
def test_multipart_upload_with_title_references_and_filename(api):
    content_type, body = multipart(
        {"title": "Kettle", "references": '{"sku": "14600", "page": 3}'}, "kettle.jpg",
        f.photo_jpeg(200, 100, seed=2),
    )
    response = upload(api, body, content_type=content_type)
    assert response.status_int == 201, response.body
    doc = api.store.get_imagedoc(response.json["id"])
    assert doc["title"] == ["Kettle"]
    assert doc["references"] == {"sku": ["14600"], "page": [3]}
    assert doc["filename"] == "kettle.jpg"


@BOTH
def test_get_patch_delete(api):
    imageid = upload(api, f.photo_jpeg(120, 90, seed=3), "?title=First").json["id"]
    got = call(api, f"/_api/images/{imageid}")
    assert got.status_int == 200 and got.content_type == "application/json"
    assert got.json["title"] == ["First"] and got.json["width"] == 120

    patched = call(api, f"/_api/images/{imageid}", "PATCH",
                   json.dumps({"title": "Second", "references": {"order": "A-7"},
                               "type": "product_image"}).encode(),
                   {"Content-Type": "application/json"})
    assert patched.status_int == 200, patched.body
    assert patched.json["title"] == ["First", "Second"]
    assert patched.json["references"] == {"order": ["A-7"]}
    assert patched.json["types"] == ["product_image"]
    assert api.store.get_imagedoc(imageid)["title"] == ["First", "Second"]

    assert Request.blank(f"/50x50/{imageid}.jpeg").get_response(api).status_int == 200
    deleted = call(api, f"/_api/images/{imageid}", "DELETE")
    assert deleted.status_int == 200 and deleted.json["deleted"] is True
    assert deleted.json["this_node_cache"]["files_removed"] == 1  # the 50x50 above
    assert call(api, f"/_api/images/{imageid}").status_int == 404
    assert call(api, f"/_api/images/{imageid}", "DELETE").status_int == 404
    assert Request.blank(f"/50x50/{imageid}.jpeg").get_response(api).status_int == 404


# -- tokens ------------------------------------------------------------------------------


@BOTH
def test_missing_token_is_401_with_challenge_and_wrong_token_403(api):
    data = f.solid_jpeg()
    missing = Request.blank("/_api/images", method="POST", body=data,
                            content_type="image/jpeg").get_response(api)
    assert missing.status_int == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in missing.json["error"]
    basic = upload(api, data, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_int == 401
    for wrong in ("Bearer nope", f"Bearer {TOKEN}x", "Bearer " + TOKEN[:-1]):
        response = upload(api, data, headers={"Authorization": wrong})
        assert response.status_int == 403, wrong
    imageid = upload(api, data).json["id"]
    for method in ("GET", "DELETE"):
        request = Request.blank(f"/_api/images/{imageid}", method=method)
        assert request.get_response(api).status_int == 401
    assert api.store.get_imagedoc(imageid)  # nothing was deleted


WRONG_TOKENS = ("Bearer nope", f"Bearer {TOKEN}x", "Bearer " + TOKEN[:-1])


def refused(app, path, method="GET", body=None, headers=None) -> None:
    """No token: 401 with a challenge; a Basic header or a wrong token: 401 and 403."""
    headers = headers or {}
    request = Request.blank(path, method=method, headers=headers)
    if body is not None:
        request.body = body
    missing = request.get_response(app)
    assert missing.status_int == 401, (path, method, missing.body)
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    basic = call(app, path, method, body, {**headers, "Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_int == 401, (path, method, basic.body)
    for wrong in WRONG_TOKENS:
        response = call(app, path, method, body, {**headers, "Authorization": wrong})
        assert response.status_int == 403, (path, method, wrong, response.body)
        if method != "HEAD":
            assert set(response.json) == {"error", "status"}  # nothing about the image


@BOTH
def test_patch_needs_the_token_and_changes_nothing_without_it(api):
    imageid = upload(api, f.solid_jpeg(), "?title=Kept").json["id"]
    change = json.dumps({"title": "Intruder", "references": {"x": "1"}}).encode()
    refused(api, f"/_api/images/{imageid}", "PATCH", change, {"Content-Type": "application/json"})
    doc = api.store.get_imagedoc(imageid)
    assert doc["title"] == ["Kept"] and doc.get("references", {}) == {}
    allowed = call(api, f"/_api/images/{imageid}", "PATCH", change,
                   {"Content-Type": "application/json"})
    assert allowed.status_int == 200 and allowed.json["title"] == ["Kept", "Intruder"]


@BOTH
def test_walking_and_random_need_the_token(api):
    ids = sorted(upload(api, f.solid_jpeg(colour=(90 * i, 9, 9))).json["id"] for i in range(2))
    for path in (f"/_api/images/{ids[0]}/next", f"/_api/images/{ids[1]}/previous",
                 "/_api/random"):
        refused(api, path)
        refused(api, path, "HEAD")
    assert call(api, f"/_api/images/{ids[0]}/next").json == {"id": ids[1]}
    assert call(api, f"/_api/images/{ids[1]}/previous").json == {"id": ids[0]}
    assert call(api, "/_api/random").json["id"] in ids


def test_without_a_configured_token_the_api_is_disabled(config):
    app = make_app(config)  # no upload_token
    for method, headers in (("POST", AUTH), ("POST", {}), ("GET", AUTH)):
        response = Request.blank("/_api/images", method=method, headers=headers,
                                 body=f.solid_jpeg()).get_response(app)
        assert response.status_int == 404
        assert "HUIMAGES_UPLOAD_TOKEN" in response.json["error"]
    assert list(config.data_dir.glob("originals/**/*.jpeg")) == []


# -- limits and bad input: always a clear 4xx ---------------------------------------------


class Untouchable(io.RawIOBase):
    """A request body that fails the test if the server reads it."""

    def read(self, size=-1):
        raise AssertionError("the body was read although Content-Length is over the limit")

    readinto = read


def raw_request(content_type, body, **environ):
    """A POST whose body stream and length headers are exactly what the test says."""
    request = Request.blank("/_api/images", method="POST", headers=AUTH)
    request.environ.pop("CONTENT_LENGTH", None)
    request.environ.update(CONTENT_TYPE=content_type, **{"wsgi.input": body}, **environ)
    return request


@BOTH
def test_oversize_is_413_before_reading_the_body(api):
    response = raw_request("image/jpeg", Untouchable(), CONTENT_LENGTH="200001").get_response(api)
    assert response.status_int == 413 and "200000" in response.json["error"]
    request = raw_request("multipart/form-data; boundary=x", Untouchable(),
                          CONTENT_LENGTH=str(10**9))
    assert request.get_response(api).status_int == 413


@BOTH
def test_chunked_body_is_cut_off_at_the_limit(api):
    chunked = {"HTTP_TRANSFER_ENCODING": "chunked"}
    too_big = raw_request("image/jpeg", io.BytesIO(b"\xff" * 300_000), **chunked)
    assert too_big.get_response(api).status_int == 413
    small = f.photo_jpeg(90, 60, seed=5)
    response = raw_request("image/jpeg", io.BytesIO(small), **chunked).get_response(api)
    assert response.status_int == 201 and response.json["length"] == len(small)


@BOTH
def test_same_limits_as_the_direct_path(api):
    assert upload(api, b"this is not a jpeg").status_int == 415
    assert upload(api, f.tga_image()).status_int == 415
    bomb = upload(api, f.declared_size_jpeg(20000, 20000))  # 400 MP declared
    assert bomb.status_int == 413, bomb.body
    big = f.photo_jpeg(1200, 900, seed=9, quality=98)
    assert len(big) > 200_000
    assert upload(api, big).status_int == 413


@pytest.mark.parametrize(
    "method, path, body, headers, status",
    [
        ("POST", "/_api/images", b"x", {"Content-Type": "text/plain"}, 415),
        ("POST", "/_api/images", b"x", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ("POST", "/_api/images?colour=red", b"x", {"Content-Type": "image/jpeg"}, 400),
        ("POST", "/_api/images?references=%5B1%5D", b"x", {"Content-Type": "image/jpeg"}, 400),
        ("POST", "/_api/images?references=%7B", b"x", {"Content-Type": "image/jpeg"}, 400),
        ("POST", "/_api/images?timestamp=yesterday", b"x", {"Content-Type": "image/jpeg"}, 400),
        ("POST", "/_api/images", b"--x\r\nnonsense", {"Content-Type": "multipart/form-data"}, 400),
        ("POST", "/_api/images", b"", {"Content-Type": "multipart/form-data; boundary=b"}, 400),
        ("GET", "/_api/images", None, {}, 400),  # a lookup that says what to find
        ("GET", "/_api/images?colour=red", None, {}, 400),
        ("GET", "/_api/images?tag=red&limit=x", None, {}, 400),
        ("POST", "/_api/tags", None, {}, 405),
        ("PUT", "/_api/images/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA01", b"{}", {}, 405),
        ("GET", "/_api/images/not-an-id", None, {}, 400),
        ("GET", "/_api/images/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA01", None, {}, 404),
        ("GET", "/_api/elsewhere", None, {}, 404),
        ("GET", "/_api/images/A/B", None, {}, 404),
    ],
)
def test_bad_requests_get_a_clear_status(config, method, path, body, headers, status):
    app = make_app(config.with_changes(upload_token=TOKEN))
    response = call(app, path, method, body, headers)
    assert response.status_int == status, response.body
    assert response.content_type == "application/json"
    assert response.json["status"] == status and response.json["error"]
    if status == 405:
        assert response.headers["Allow"]


def test_bad_patches(config):
    app = make_app(config.with_changes(upload_token=TOKEN))
    imageid = upload(app, f.solid_jpeg()).json["id"]
    path = f"/_api/images/{imageid}"
    as_json = {"Content-Type": "application/json"}
    for body, headers, status in (
        (b'{"title": "x"}', {"Content-Type": "text/plain"}, 415),
        (b"{not json", as_json, 400),
        (b"\xff\xfe", as_json, 400),
        (b'["title"]', as_json, 400),
        (b'{"colour": "red"}', as_json, 400),
        (b'{"title": 7}', as_json, 400),
        (b'{"references": {"a": {"nested": 1}}}', as_json, 400),
        (b'{"references": {"a": NaN}}', as_json, 400),
        (b'{"references": {"a": 1' + b"0" * 400 + b'}}', as_json, 400),  # was a 500
        (b'{"title": "' + b"x" * 70_000 + b'"}', as_json, 413),
    ):
        response = call(app, path, "PATCH", body, headers)
        assert response.status_int == status, (body[:40], response.body)
    assert app.store.get_imagedoc(imageid).get("title", []) == []
    request = Request.blank(path, method="PATCH", headers={**AUTH, **as_json})
    request.environ.pop("CONTENT_LENGTH", None)
    assert request.get_response(app).status_int == 411


def test_deeply_nested_json_is_400_not_500(config):
    """60,000 '[' fit in every limit but exhaust the JSON decoder's recursion."""
    app = make_app(config.with_changes(upload_token=TOKEN))
    imageid = upload(app, f.solid_jpeg()).json["id"]
    deep = "[" * 60_000
    patch = call(app, f"/_api/images/{imageid}", "PATCH", deep.encode(),
                 {"Content-Type": "application/json"})
    assert patch.status_int == 400 and "nested" in patch.json["error"], patch.body
    nested_value = b'{"references": ' + deep.encode() + b"}"
    assert call(app, f"/_api/images/{imageid}", "PATCH", nested_value,
                {"Content-Type": "application/json"}).status_int == 400
    query = upload(app, f.solid_jpeg(colour=(1, 2, 3)), "?references=" + "%5B" * 60_000)
    assert query.status_int == 400 and "nested" in query.json["error"], query.body
    content_type, form = multipart({"references": deep}, "a.jpg", f.solid_jpeg(colour=(4, 5, 6)))
    field = upload(app, form, content_type=content_type)
    assert field.status_int == 400 and "nested" in field.json["error"], field.body


def test_text_that_is_not_unicode_is_refused(config):
    """JSON may escape a lone surrogate; stored, it broke every page showing it."""
    app = make_app(config.with_changes(upload_token=TOKEN))
    imageid = upload(app, f.solid_jpeg()).json["id"]
    path, as_json = f"/_api/images/{imageid}", {"Content-Type": "application/json"}
    for body in (rb'{"title": "\ud800x"}', rb'{"type": "x\udfff"}',
                 rb'{"references": {"sku": "\ud800"}}', rb'{"references": {"\udc00": "1"}}'):
        response = call(app, path, "PATCH", body, as_json)
        assert response.status_int == 400 and "Unicode" in response.json["error"], body
    assert app.store.get_imagedoc(imageid).get("title", []) == []
    assert app.store.get_imagedoc(imageid).get("references", {}) == {}

    references = '{"sku": "\\ud800"}'  # the JSON text, escape included
    query = upload(app, f.solid_jpeg(colour=(9, 9, 9)), "?references=" + quote(references))
    assert query.status_int == 400, query.body
    content_type, form = multipart({"references": references}, "b.jpg",
                                   f.solid_jpeg(colour=(8, 8, 8)))
    assert upload(app, form, content_type=content_type).status_int == 400

    pair = call(app, path, "PATCH", rb'{"title": "smile \ud83d\ude00"}', as_json)
    assert pair.status_int == 200 and pair.json["title"] == ["smile \U0001f600"]


# -- end to end: a real ``huimages serve`` and curl-like requests -------------------------------


def fetch(url, method="GET", body=None, headers=None):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    server = LiveServer(tmp_path_factory.mktemp("api") / "data",
                        env={"HUIMAGES_UPLOAD_TOKEN": TOKEN}).start()
    yield server
    server.stop()


def test_curl_style_session_against_huimages_serve(api_server):
    base = api_server.url
    data = f.photo_jpeg(640, 480, seed=11)
    # curl -H "Authorization: Bearer $T" -H "Content-Type: image/jpeg" --data-binary @p.jpg
    status, headers, body = fetch(f"{base}/_api/images?title=Sunset", "POST", data,
                                 {**AUTH, "Content-Type": "image/jpeg"})
    assert status == 201, body
    created = json.loads(body)
    imageid = created["id"]
    assert headers["Location"].endswith(f"/_api/images/{imageid}")
    status, _, jpeg = fetch(created["urls"]["small"])
    assert status == 200 and Image.open(io.BytesIO(jpeg)).size == (213, 160)

    # curl -F file=@p.jpg -F title=... (another image)
    content_type, form = multipart({"title": "Dawn"}, "dawn.jpg", f.photo_jpeg(300, 200, seed=12))
    status, _, body = fetch(f"{base}/_api/images", "POST", form,
                           {**AUTH, "Content-Type": content_type})
    assert status == 201, body
    second = json.loads(body)["id"]

    status, _, body = fetch(f"{base}/_api/images/{imageid}", "PATCH",
                           b'{"title": "Sunset over the sea"}',
                           {**AUTH, "Content-Type": "application/json"})
    assert status == 200 and json.loads(body)["title"] == ["Sunset", "Sunset over the sea"]
    status, _, body = fetch(f"{base}/_api/images/{second}", headers=AUTH)
    assert status == 200 and json.loads(body)["filename"] == "dawn.jpg"
    assert fetch(f"{base}/_api/images/{second}", "DELETE", headers=AUTH)[0] == 200
    assert fetch(f"{base}/o/{second}.jpeg")[0] == 404

    status, headers, _ = fetch(f"{base}/_api/images", "POST", data, {"Content-Type": "image/jpeg"})
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert fetch(f"{base}/_api/images", "POST", b"not an image",
                {**AUTH, "Content-Type": "image/jpeg"})[0] == 415


def test_chunked_upload_through_gunicorn(api_server):
    data = f.photo_jpeg(200, 150, seed=13)
    connection = http.client.HTTPConnection("127.0.0.1", api_server.port, timeout=60)
    try:
        connection.request("POST", "/_api/images", body=iter([data[:1000], data[1000:]]),
                           headers={**AUTH, "Content-Type": "image/jpeg"},
                           encode_chunked=True)
        response = connection.getresponse()
        body = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 201, body
    assert body["length"] == len(data) and body["width"] == 200


def test_paths_that_are_not_utf8_get_a_clear_status_not_500(config):
    app = make_app(config.with_changes(upload_token=TOKEN))
    for path in ("/_api/%ff", "/_api/images/%ff%fe"):
        for method in ("GET", "DELETE"):
            response = call(app, path, method)
            assert response.status_int in (400, 404), (path, method, response.body)


@BOTH
def test_the_upload_answer_reads_the_catalog_once(api, monkeypatch):
    """The JSON answer's URLs (one per preset, each with the SEO name) come from the
    document the upload wrote, read once: not once per URL (13 round trips on CouchDB)."""
    from huimages_wsgi.storage.couch import CouchCatalog
    from huimages_wsgi.storage.sqlite import SQLiteCatalog

    reads = []
    for cls in (CouchCatalog, SQLiteCatalog):
        def counted(self, imageid, _get=cls.get):
            reads.append(imageid)
            return _get(self, imageid)
        monkeypatch.setattr(cls, "get", counted)
    response = upload(api, f.photo_jpeg(400, 300, seed=77), "?title=Once")
    assert response.status_int == 201, response.body
    assert len(response.json["urls"]) > 5
    assert reads == [response.json["id"]], reads
