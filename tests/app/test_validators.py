"""What a shared cache sees: one validator everywhere, RFC 9110's conditionals and ranges,
the image named for purging, the canonical URL of an SEO name, and errors that stay errors.

Two stores over one catalog and two cache directories are two nodes: a variant
each renders on its own has the same Last-Modified at both (the image's upload
time from the catalog), so a cache that fetched it from one revalidates at the
other with a 304. The webservers in front give the same date for the same
file (tests/system/test_deployment.py, tests/system/test_varnish.py).
"""

from __future__ import annotations

import email
import time
from email.utils import format_datetime, parsedate_to_datetime

import pytest
from webob import Request

from huimages_wsgi import Config, ImageMiddleware, ImageStore, make_app
from huimages_wsgi.core.errors import BackendUnavailable
from huimages_wsgi.store.metadata import written_at

from .. import imagefactory as f

pytestmark = pytest.mark.fast


def get(app, path, **headers):
    method = headers.pop("method", "GET")
    return Request.blank(path, method=method, headers=headers).get_response(app)


@pytest.fixture
def two_nodes(tmp_path):
    """Two image middlewares over one catalog and blob store, each with its own cache."""
    data = tmp_path / "data"
    first = ImageStore(Config(data_dir=data, cache_dir=tmp_path / "cache-a"))
    second = ImageStore(Config(data_dir=data, cache_dir=tmp_path / "cache-b"))
    # uploaded long ago: a Last-Modified that were the time of writing could not pass
    imageid = first.save_image(f.photo_jpeg(640, 480), title="Red bike",
                               timestamp="20090129T123456")
    return (ImageMiddleware(prefix="", store=first), ImageMiddleware(prefix="", store=second),
            imageid)


@pytest.fixture
def node(two_nodes):
    app, _, imageid = two_nodes
    path = f"/240x160/{imageid}.jpeg"
    return app, path, get(app, path)


def test_last_modified_is_the_upload_time_on_every_node(two_nodes):
    first, second, imageid = two_nodes
    uploaded = written_at(first.store.catalog.get(imageid)["ctime"])
    for size in ("240x160", "o", "75x75!"):
        ext = "jpeg"
        a = get(first, f"/{size}/{imageid}.{ext}")
        time.sleep(0.01)
        b = get(second, f"/{size}/{imageid}.{ext}")  # rendered again, by another node
        assert a.status_int == b.status_int == 200 and a.body == b.body
        assert a.headers["Last-Modified"] == b.headers["Last-Modified"]
        assert parsedate_to_datetime(a.headers["Last-Modified"]).timestamp() == uploaded
        assert parsedate_to_datetime(a.headers["Last-Modified"]).year == 2009
        assert "ETag" not in a.headers and "ETag" not in b.headers
        again = get(second, f"/{size}/{imageid}.{ext}",
                    **{"If-Modified-Since": a.headers["Last-Modified"]})
        assert again.status_int == 304, size  # revalidated at the other node


def test_if_none_match_wins_over_if_modified_since(node):
    app, path, first = node
    since = first.headers["Last-Modified"]
    # no entity tag: a list never matches, so the date is not asked (RFC 9110 13.2.2)
    assert get(app, path, **{"If-None-Match": '"x"', "If-Modified-Since": since}).status_int == 200
    assert get(app, path, **{"If-None-Match": "*"}).status_int == 304
    older = format_datetime(parsedate_to_datetime(since).replace(year=2001), usegmt=True)
    assert get(app, path, **{"If-Modified-Since": older}).status_int == 200


@pytest.mark.parametrize("headers, status", [
    ({"If-Match": '"zz"'}, 412),
    ({"If-Match": "*"}, 200),
    ({"If-Unmodified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"}, 412),
    ({"If-Unmodified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}, 200),
    ({"If-Unmodified-Since": "not a date"}, 200),
    ({"If-Match": "*", "If-Unmodified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"}, 200),
])
def test_preconditions_fail_with_412(node, headers, status):
    app, path, first = node
    answer = get(app, path, **headers)
    assert answer.status_int == status, headers
    if status == 412:
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.content_type == "text/plain"


def test_one_range_and_several(node):
    app, path, first = node
    size = len(first.body)
    assert first.headers["Accept-Ranges"] == "bytes"
    one = get(app, path, Range="bytes=10-19")
    assert one.status_int == 206 and one.body == first.body[10:20]
    assert one.headers["Content-Range"] == f"bytes 10-19/{size}"
    suffix = get(app, path, Range="bytes=-5")
    assert suffix.body == first.body[-5:]
    several = get(app, path, Range="bytes=0-9,20-29")
    assert several.status_int == 206
    assert several.content_type == "multipart/byteranges"
    assert int(several.headers["Content-Length"]) == len(several.body)
    message = email.message_from_bytes(
        b"Content-Type: " + several.headers["Content-Type"].encode() + b"\r\n\r\n" + several.body)
    parts = [(part["Content-Range"], part.get_payload(decode=True)) for part in message.walk()
             if not part.is_multipart()]
    assert parts == [(f"bytes 0-9/{size}", first.body[0:10]),
                     (f"bytes 20-29/{size}", first.body[20:30])]
    assert all(part.get_content_type() == "image/jpeg" for part in message.walk()
               if not part.is_multipart())
    merged = get(app, path, Range="bytes=0-9,5-19")  # overlapping: one part
    assert merged.headers["Content-Range"] == f"bytes 0-19/{size}"


@pytest.mark.parametrize("asked", ["bytes=-0", "bytes=99999999-", "bytes=99999999-99999999",
                                   "bytes=" + "1" * 5000 + "-"])
def test_unsatisfiable_ranges_are_416_and_never_cached(node, asked):
    app, path, first = node
    answer = get(app, path, Range=asked)
    assert answer.status_int == 416
    assert answer.headers["Content-Range"] == f"bytes */{len(first.body)}"
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("asked", ["items=0-1", "bytes=5-2", "bytes=a-b", "bytes=\u00b2-3",
                                   "bytes=1-\u00b3", "bytes=-", "bytes=0-1-2",
                                   "bytes=" + ",".join(f"{n}-{n}" for n in range(0, 40, 2))])
def test_ranges_we_do_not_serve_get_the_whole_image(node, asked):
    app, path, first = node
    answer = get(app, path, Range=asked)
    assert answer.status_int == 200 and answer.body == first.body


def test_if_range_resumes_an_original_at_its_exact_date_only(two_nodes):
    app, _, imageid = two_nodes
    path = f"/o/{imageid}.jpeg"
    first = get(app, path)
    since = first.headers["Last-Modified"]
    part = get(app, path, Range="bytes=0-1", **{"If-Range": since})
    assert part.status_int == 206 and part.body == first.body[:2]
    older = format_datetime(parsedate_to_datetime(since).replace(year=2001), usegmt=True)
    for if_range in (older, '"an-etag"', 'W/"x"'):
        answer = get(app, path, Range="bytes=0-1", **{"If-Range": if_range})
        assert answer.status_int == 200 and answer.body == first.body


def test_if_range_never_splices_two_renderings_of_a_variant(node):
    """A variant's date is the image's, and another node (another Pillow) may have
    rendered other bytes under it: a resumed download gets the whole file instead."""
    app, path, first = node
    answer = get(app, path, Range="bytes=0-1", **{"If-Range": first.headers["Last-Modified"]})
    assert answer.status_int == 200 and answer.body == first.body
    assert get(app, path, Range="bytes=0-1").status_int == 206  # a plain Range still is


def test_head_ignores_range(node):
    app, path, first = node
    head = get(app, path, method="HEAD", Range="bytes=0-1")
    assert head.status_int == 200 and head.headers["Content-Length"] == str(len(first.body))


def test_every_image_answer_names_its_image_for_purging(two_nodes, tmp_path):
    app, _, imageid = two_nodes
    for path in (f"/240x160/{imageid}.jpeg", f"/o/{imageid}.jpeg",
                 f"/240x160/{imageid}/red-bike.jpeg"):
        miss, hit = get(app, path), get(app, path)
        not_modified = get(app, path, **{"If-Modified-Since": hit.headers["Last-Modified"]})
        for answer in (miss, hit, not_modified):
            assert answer.headers["Surrogate-Key"] == imageid, (path, answer.status)
    tagged = ImageMiddleware(prefix="", store=ImageStore(Config(
        data_dir=tmp_path / "data", cache_dir=tmp_path / "cache-c",
        surrogate_headers=("xkey", "Cache-Tag"))))
    answer = get(tagged, f"/240x160/{imageid}.jpeg")
    assert answer.headers["xkey"] == answer.headers["Cache-Tag"] == imageid
    assert "Surrogate-Key" not in answer.headers
    bare = ImageMiddleware(prefix="", store=ImageStore(Config(
        data_dir=tmp_path / "data", cache_dir=tmp_path / "cache-d", surrogate_headers=())))
    assert "Surrogate-Key" not in get(bare, f"/240x160/{imageid}.jpeg").headers


def test_seo_names_point_at_the_canonical_url(two_nodes):
    app, _, imageid = two_nodes
    seo = get(app, f"/240x160/{imageid}/red-bike.jpeg?utm=x")
    assert seo.headers["Link"] == f'</240x160/{imageid}.jpeg>; rel="canonical"'
    assert "Link" not in get(app, f"/240x160/{imageid}.jpeg").headers
    mounted = ImageMiddleware(prefix="/img", store=app.store)
    under = get(mounted, f"/img/75x75!/{imageid}/any-name.webp")
    assert under.headers["Link"] == f'</img/75x75!/{imageid}.webp>; rel="canonical"'


def test_errors_are_never_cached_nor_sniffed_and_name_no_internals(two_nodes, caplog):
    app, _, imageid = two_nodes
    hostile = get(app, f"/<img src=x onerror=alert(1)>/{imageid}.jpeg")
    assert hostile.status_int == 400 and hostile.content_type == "text/plain"
    for answer in (hostile, get(app, "/240x160/" + "A" * 32 + "01.jpeg")):
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"

    def down(imageid):
        raise BackendUnavailable("CouchDB unreachable: [Errno 111] Connection refused at /srv/x")

    app.store.catalog.get = down
    answer = get(app, f"/300x200/{imageid}.jpeg")
    assert answer.status_int == 503 and answer.headers["Retry-After"]
    assert b"CouchDB" not in answer.body and b"Errno" not in answer.body
    assert b"unavailable" in answer.body
    assert "CouchDB unreachable" in caplog.text  # the operator's log has the detail


def test_api_errors_tell_the_token_holder_why_and_head_matches_get(tmp_path):
    app = make_app(Config(data_dir=tmp_path, upload_token="a-long-enough-token-1234"))

    def down(*args, **kwargs):
        raise BackendUnavailable("S3 unreachable: http://127.0.0.1:1/bucket refused")

    app.store.catalog.get = down
    answer = get(app, "/_api/images/" + "A" * 32 + "01",
                 Authorization="Bearer a-long-enough-token-1234")
    assert answer.status_int == 503 and b"S3 unreachable" in answer.body  # the operator's
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    public = get(app, f"/300x200/{'A' * 32}01.jpeg")  # an image URL: anyone's
    assert public.status_int == 503 and b"S3" not in public.body
    for path in ("/_api/images", "/_browse/upload", "/_api/", "/_api/tags?limit=x"):
        got, head = get(app, path), get(app, path, method="HEAD")
        assert got.status_int == head.status_int and got.status_int in (401, 404, 405), path
        assert got.headers["Content-Length"] == head.headers["Content-Length"], path
    not_allowed = get(app, f"/240x160/{'A' * 32}01.jpeg", method="POST")
    assert not_allowed.status_int == 405 and not_allowed.headers["Allow"] == "GET, HEAD"
