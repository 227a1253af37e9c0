"""HTTP semantics of the middleware, through WebOb against the WSGI callable."""

import io
import logging
import os
import threading
import time
from wsgiref.util import FileWrapper

import pytest
from PIL import Image
from webob import Request

from huimages_wsgi import Config, ImageMiddleware, ImageStore, make_app
from huimages_wsgi.core.urls import request_path
from huimages_wsgi.storage import is_live

from .. import imagefactory as f
from ..backends import read_original


@pytest.fixture
def config(any_config):
    """Every test here that takes ``app`` or ``store`` runs on each backend combination."""
    return any_config


@pytest.fixture
def store(any_store):
    return any_store


@pytest.fixture
def imageid(store):
    return store.save_image(f.photo_jpeg(800, 600), title="Red Bike")


def get(app, path, **kwargs):
    return Request.blank(path, **kwargs).get_response(app)


@pytest.mark.parametrize(
    "size, expected",
    [
        ("o", (800, 600)),
        ("240x160", (213, 160)),
        ("75x75!", (75, 75)),
        ("square", (75, 75)),
        ("thumb", (50, 38)),
        ("2000x2000", (800, 600)),
    ],
)
def test_every_size_kind(app, imageid, size, expected):
    response = get(app, f"/{size}/{imageid}.jpeg")
    assert response.status_int == 200
    assert response.content_type == "image/jpeg"
    assert int(response.headers["Content-Length"]) == len(response.body)
    assert Image.open(io.BytesIO(response.body)).size == expected
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert "ETag" not in response.headers  # Last-Modified is the one validator
    assert response.last_modified is not None and response.headers["Accept-Ranges"] == "bytes"


def test_original_bytes_are_untouched(app, store, imageid):
    assert get(app, f"/o/{imageid}.jpeg").body == read_original(store, imageid)


def test_seo_url_serves_the_same_file(app, imageid):
    plain = get(app, f"/240x160/{imageid}.jpeg")
    seo = get(app, f"/240x160/{imageid}/red-bike.jpeg")
    assert seo.status_int == 200 and seo.body == plain.body
    assert seo.last_modified == plain.last_modified


def test_cache_file_is_written_where_a_webserver_finds_it(app, config, imageid):
    get(app, f"/75x75!/{imageid}/anything.jpeg")
    cached = config.cache_dir / "75x75!" / f"{imageid}.jpeg"
    assert cached.is_file()
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # no temp files left


def test_hit_is_served_from_the_cache_without_the_catalog(app, store, imageid):
    first = get(app, f"/240x160/{imageid}.jpeg")
    store.catalog = None  # any catalog access would now fail loudly
    second = get(app, f"/240x160/{imageid}.jpeg")
    assert second.status_int == 200 and second.body == first.body


def test_conditional_requests(app, imageid):
    first = get(app, f"/240x160/{imageid}.jpeg")
    since = get(
        app,
        f"/240x160/{imageid}.jpeg",
        headers={"If-Modified-Since": first.headers["Last-Modified"]},
    )
    assert since.status_int == 304 and since.body == b""
    assert since.headers["Last-Modified"] == first.headers["Last-Modified"]
    other = get(app, f"/240x160/{imageid}.jpeg", headers={"If-None-Match": '"nope"'})
    assert other.status_int == 200 and other.body == first.body


def test_head_has_headers_and_no_body(app, imageid):
    full = get(app, f"/240x160/{imageid}.jpeg")
    head = get(app, f"/240x160/{imageid}.jpeg", method="HEAD")
    assert head.status_int == 200 and head.body == b""
    for header in ("Content-Type", "Content-Length", "Last-Modified", "Cache-Control",
                   "Surrogate-Key", "Accept-Ranges"):
        assert head.headers[header] == full.headers[header]


def test_head_on_a_miss_generates(app, imageid, config):
    head = get(app, f"/100x100/{imageid}.jpeg", method="HEAD")
    assert head.status_int == 200 and int(head.headers["Content-Length"]) > 0
    assert (config.cache_dir / "100x100" / f"{imageid}.jpeg").exists()


@pytest.mark.parametrize(
    "path, status",
    [
        ("/240x160/" + "A" * 32 + "01.jpeg", 404),
        ("/12xx/{id}.jpeg", 400),
        ("/0x10/{id}.jpeg", 400),
        ("/nosuchpreset/{id}.jpeg", 400),
        ("/9999x9999/{id}.jpeg", 400),
        ("/240x160/not-an-id.jpeg", 400),
        ("/240x160/{id}.gif", 404),
        ("/240x160/{id}", 301),  # huImages' form: to /240x160/<ID>.jpeg
        ("/240x160", 404),
        ("/", 404),
        ("/240x160/{id}/a/b.jpeg", 301),
        ("/240x160/../{id}.jpeg", 400),
    ],
)
def test_error_statuses(app, imageid, path, status):
    response = get(app, path.format(id=imageid))
    assert response.status_int == status
    assert response.content_type == "text/plain"
    assert "Traceback" not in response.text


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405(app, imageid, method):
    response = get(app, f"/240x160/{imageid}.jpeg", method=method)
    assert response.status_int == 405 and "GET" in response.headers["Allow"]


def test_deleted_image_is_404(app, store, imageid):
    assert get(app, f"/240x160/{imageid}.jpeg").status_int == 200
    store.delete_image(imageid)
    assert get(app, f"/240x160/{imageid}.jpeg").status_int == 404
    assert get(app, f"/o/{imageid}.jpeg").status_int == 404


def test_middleware_passes_other_requests_through(store, imageid):
    def host_app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"host:" + environ["PATH_INFO"].encode()]

    app = ImageMiddleware(host_app, prefix="/img", store=store)
    assert get(app, "/about").body == b"host:/about"
    assert get(app, "/imgfoo/x").body == b"host:/imgfoo/x"
    assert get(app, f"/img/75x75!/{imageid}.jpeg").content_type == "image/jpeg"
    assert get(app, "/img/12xx/whatever.jpeg").status_int == 400


def test_uses_the_servers_file_wrapper(app, imageid):
    wrapped = []

    def file_wrapper(handle, block_size):
        wrapped.append(handle)
        return FileWrapper(handle, block_size)  # closes the handle when the server closes it

    environ = {"wsgi.file_wrapper": file_wrapper}
    miss = get(app, f"/240x160/{imageid}.jpeg", environ=environ)  # generated, then streamed
    assert miss.status_int == 200 and len(wrapped) == 1
    hit = get(app, f"/240x160/{imageid}.jpeg", environ=environ)  # the fast path
    assert hit.status_int == 200 and len(wrapped) == 2 and hit.body == miss.body
    assert all(handle.closed for handle in wrapped)


def test_middleware_from_a_config_mounts_at_img_by_default(tmp_path):
    """``ImageMiddleware(app, config=...)``: the documented defaults, no store passed."""
    def host_app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"host:" + environ["PATH_INFO"].encode()]

    config = Config(data_dir=tmp_path / "data")
    app = ImageMiddleware(host_app, config=config)
    imageid = ImageStore(config).save_image(f.photo_jpeg(300, 200))
    response = get(app, f"/img/100x100/{imageid}.jpeg")
    assert response.status_int == 200 and response.content_type == "image/jpeg"
    assert (config.cache_root / "100x100" / f"{imageid}.jpeg").read_bytes() == response.body
    assert get(app, f"/100x100/{imageid}.jpeg").body == f"host:/100x100/{imageid}.jpeg".encode()


def test_xsendfile_mode(tmp_path):
    config = Config(data_dir=tmp_path, xsendfile="x-sendfile")
    app = make_app(config)
    imageid = app.store.save_image(f.solid_jpeg())
    response = get(app, f"/10x10/{imageid}.jpeg")
    target = response.headers["X-Sendfile"]
    assert response.body == b"" and os.path.isfile(target)
    assert target == str(config.cache_dir / "10x10" / f"{imageid}.jpeg")
    accel = make_app(Config(data_dir=tmp_path, xsendfile="x-accel-redirect"))
    response = get(accel, f"/10x10/{imageid}.jpeg")
    assert response.headers["X-Accel-Redirect"] == f"/huimages-cache/10x10/{imageid}.jpeg"


@pytest.mark.parametrize(
    "environ, expected",
    [
        ({"PATH_INFO": "/o/X.jpeg"}, "/o/X.jpeg"),
        (
            {
                "PATH_INFO": "",
                "SCRIPT_NAME": "/75x75!/X.jpeg",
                "REQUEST_URI": "/75x75%21/X.jpeg?sig=1",
            },
            "/75x75!/X.jpeg",
        ),
        ({"PATH_INFO": "", "SCRIPT_NAME": "/img", "REQUEST_URI": "/img/o/X.jpeg"}, "/o/X.jpeg"),
        ({"PATH_INFO": "", "SCRIPT_NAME": "", "REQUEST_URI": "/o/X.jpeg"}, "/o/X.jpeg"),
        # absolute-form target; %XX decoded to bytes, kept latin-1 as PEP 3333 wants
        ({"PATH_INFO": "", "REQUEST_URI": "http://h:80/o/X/%C3%A9.jpeg"}, "/o/X/\xc3\xa9.jpeg"),
        # malformed authorities (urlsplit raises on these) and no path at all
        ({"PATH_INFO": "", "REQUEST_URI": "http://[abc/o/X.jpeg"}, "/o/X.jpeg"),
        ({"PATH_INFO": "", "REQUEST_URI": "http://h:99999999"}, "/"),
        # origin-form paths that merely contain "://" stay as they are
        ({"PATH_INFO": "", "REQUEST_URI": "/a://b/c"}, "/a://b/c"),
        ({"PATH_INFO": "", "REQUEST_URI": "/_x://y/_metrics"}, "/_x://y/_metrics"),
    ],
)
def test_request_path_behind_fastcgi_fronts(environ, expected):
    assert request_path(environ) == expected


def test_empty_path_info_is_served_via_request_uri(app, imageid):
    request = Request.blank("/")
    request.environ.update(
        PATH_INFO="", SCRIPT_NAME=f"/75x75!/{imageid}.jpeg", REQUEST_URI=f"/75x75%21/{imageid}.jpeg"
    )
    response = request.get_response(app)
    assert response.status_int == 200 and response.content_type == "image/jpeg"


@pytest.fixture
def embedded_hit(tmp_path):
    """One embedded app and one cached variant: the hit path never touches a backend."""

    def build(**settings):
        app = make_app(Config(data_dir=tmp_path, **settings))
        imageid = app.store.save_image(f.photo_jpeg(400, 300))
        miss = get(app, f"/240x160/{imageid}.jpeg")
        return app, f"/240x160/{imageid}.jpeg", miss

    return build


@pytest.mark.parametrize("xsendfile", [None, "x-sendfile", "x-accel-redirect"])
def test_hit_answers_exactly_like_the_generating_request(embedded_hit, xsendfile):
    """Hits skip WebOb; what the client sees must not change."""
    app, path, miss = embedded_hit(xsendfile=xsendfile)
    hit = get(app, path)
    assert (hit.status, hit.headerlist, hit.body) == (miss.status, miss.headerlist, miss.body)
    head = get(app, path, method="HEAD")
    assert (head.status, head.headerlist, head.body) == (miss.status, miss.headerlist, b"")


def test_range_requests_are_still_honoured(embedded_hit):
    app, path, miss = embedded_hit()
    part = get(app, path, headers={"Range": "bytes=0-9"})
    assert part.status_int == 206 and part.body == miss.body[:10]
    assert get(app, path, headers={"Range": "bytes=99999999-"}).status_int == 416


def test_conditional_edge_cases(embedded_hit):
    app, path, miss = embedded_hit()
    star = get(app, path, headers={"If-None-Match": "*"})
    assert star.status_int == 304 and "Content-Type" not in star.headers
    for date in ("Mon, 01 Jan 99999 00:00:00 GMT", "not a date", ""):  # ignored, never a 500
        assert get(app, path, headers={"If-Modified-Since": date}).status_int == 200
        ranged = get(app, path, headers={"If-Modified-Since": date, "Range": "bytes=0-1"})
        assert ranged.status_int == 206


def test_a_generation_held_too_long_elsewhere_is_503_with_retry_after(tmp_path):
    """Single-flight waiters give up after HUIMAGES_LOCK_TIMEOUT with a retryable answer."""
    config = Config(data_dir=tmp_path / "data", lock_timeout=0.2)
    app = make_app(config)
    imageid = app.store.save_image(f.photo_jpeg(300, 200))
    holding, release = threading.Event(), threading.Event()

    def slow_writer(out):
        holding.set()
        release.wait(10)
        out.write(b"not served")

    holder = threading.Thread(
        target=app.store.cache.produce, args=("100x100", imageid, "jpeg", slow_writer)
    )
    holder.start()
    try:
        assert holding.wait(10)
        response = get(app, f"/100x100/{imageid}.jpeg")
        assert response.status_int == 503 and response.headers["Retry-After"]
        assert b"being generated" in response.body
    finally:
        release.set()
        holder.join()


def test_a_render_from_a_preview_is_not_held_back_by_a_waiting_decode(tmp_path, caplog):
    """With the process's decode slot in use, a size a preview serves still renders in
    a free slot; one that needs the original expects a long wait and is refused at
    once with 503 and Retry-After (admission.py)."""
    config = Config(data_dir=tmp_path / "data", render_slots=2, render_slots_per_process=1,
                    render_wait=0.3)
    app = ImageMiddleware(prefix="", store=ImageStore(config))
    # a PNG is decoded whole: 2400x1800 is a large decode where no preview serves
    imageid = app.store.save_image(f.encode(f.photo(2400, 1800), "PNG"))  # previews: p512
    doc = app.store.catalog.get(imageid)
    renderer, sizes = app.store.renderer, app.store.sizes
    assert renderer.preview_for(doc, sizes.parse("200x150")) is not None
    assert renderer.preview_for(doc, sizes.parse("1500x1100")) is None
    assert renderer.decodes_large(doc, sizes.parse("1500x1100"))
    jpeg = app.store.catalog.get(app.store.save_image(f.photo_jpeg(2400, 1800)))
    assert not renderer.decodes_large(jpeg, sizes.parse("1100x800"))  # libjpeg at 1/2
    holding, release = threading.Event(), threading.Event()

    def decode_an_original_elsewhere():
        with app.admission.render(large=True):
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=decode_an_original_elsewhere)
    holder.start()
    try:
        assert holding.wait(10)
        assert get(app, f"/200x150/{imageid}.jpeg").status_int == 200
        started = time.monotonic()
        caplog.clear()
        response = get(app, f"/1500x1100/{imageid}.jpeg")
        assert response.status_int == 503 and response.headers["Retry-After"], response.body
        assert time.monotonic() - started < 0.5
        # many and expected under a storm: counted on /_metrics, not logged one by one
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    finally:
        release.set()
        holder.join()
    assert get(app, f"/1500x1100/{imageid}.jpeg").status_int == 200


def count_catalog_reads(app: ImageMiddleware) -> list[tuple]:
    """From now on, the arguments of every catalog read of ``app``'s store, in order."""
    reads, catalog_get = [], app.store.catalog.get

    def counted_get(*args, **kwargs):
        reads.append(args)
        return catalog_get(*args, **kwargs)

    app.store.catalog.get = counted_get
    return reads


def test_a_burst_for_one_new_variant_takes_one_render_slot(tmp_path):
    """Requests for the same missing variant wait for the first one in the cache's
    single-flight lock, before admission: one render slot, one render."""
    config = Config(data_dir=tmp_path / "data", render_slots=4, render_wait=10)
    app = ImageMiddleware(prefix="", store=ImageStore(config))
    imageid = app.store.save_image(f.photo_jpeg(800, 600))
    running, most = [0], [0]

    def observe(kind: str, value: float) -> None:
        if kind == "running":
            running[0] += int(value)
            most[0] = max(most[0], running[0])

    app.admission.observer = observe
    rendering, go_on = threading.Event(), threading.Event()
    render, renders = app.store.engine.render, []

    def slow_render(*args, **kwargs):
        renders.append(1)
        rendering.set()
        assert go_on.wait(10)
        return render(*args, **kwargs)

    app.store.engine.render = slow_render
    catalog_reads = count_catalog_reads(app)
    answers = []
    burst = [threading.Thread(target=lambda: answers.append(get(app, f"/300x200/{imageid}.jpeg")))
             for _ in range(6)]
    for thread in burst:
        thread.start()
    assert rendering.wait(10)
    wait_until(lambda: len(catalog_reads) == 6)  # all six are at the lock by now
    assert running[0] == 1, f"{running[0]} render slots held for one variant"
    go_on.set()
    for thread in burst:
        thread.join(20)
    assert [a.status_int for a in answers] == [200] * 6
    assert len({a.body for a in answers}) == 1 and most[0] == 1 and len(renders) == 1


def test_a_storm_of_cheap_renders_queues_and_a_storm_of_decodes_is_refused(tmp_path):
    """Admission by the expected wait: renders from previews take milliseconds, so many
    queue and all finish; large decodes of the whole original are refused once the
    queue ahead of them would last longer than the wait."""
    config = Config(data_dir=tmp_path / "data", render_slots=1, render_wait=1.0)
    app = ImageMiddleware(prefix="", store=ImageStore(config))
    imageid = app.store.save_image(f.encode(f.photo(2400, 1800), "PNG"))  # decoded whole
    cheap = [get_in_thread(app, f"/{100 + n}x{80 + n}/{imageid}.jpeg") for n in range(12)]
    assert [answer().status_int for answer in cheap] == [200] * 12
    admission = app.admission
    for _ in range(8):  # what renders of this whole original take here
        with admission.render(large=True):
            time.sleep(0.25)
    dear = [get_in_thread(app, f"/{1300 + n}x{1000 + n}/{imageid}.jpeg") for n in range(12)]
    statuses = [answer().status_int for answer in dear]
    assert statuses.count(200) >= 1 and statuses.count(503) >= 6, statuses


def test_a_miss_refused_for_a_full_queue_does_not_ask_the_catalog(tmp_path):
    """With the queue full, a miss is a 503 before any backend is asked: an unknown ID
    is then a 503 too (a 404 would need the catalog), and the answer does not wait."""
    config = Config(data_dir=tmp_path / "data", render_slots=1, render_wait=5.0,
                    render_queue=3)
    app = ImageMiddleware(prefix="", store=ImageStore(config))
    imageid = app.store.save_image(f.photo_jpeg(800, 600))
    unknown = "A" * 32 + "01"
    catalog_reads = count_catalog_reads(app)
    release, held = threading.Event(), []

    def hold(large: bool) -> None:
        with app.admission.render(large):
            held.append(1)
            release.wait(10)

    holders = [threading.Thread(target=hold, args=(False,)) for _ in range(4)]
    for thread in holders:  # one renders, three wait: the queue is full
        thread.start()
    try:
        wait_until(lambda: len(app.admission._waiting) == 3)
        started = time.monotonic()
        answers = [get(app, f"/300x200/{imageid}.jpeg"), get(app, f"/300x200/{unknown}.jpeg")]
        assert time.monotonic() - started < 2.0
    finally:
        release.set()
        for thread in holders:
            thread.join(10)
    assert [a.status_int for a in answers] == [503, 503]
    assert all(a.headers["Retry-After"] for a in answers)
    assert catalog_reads == []
    # the queue empties again after every answer, a 404 too
    for _ in range(5):
        assert get(app, f"/300x200/{unknown}.jpeg").status_int == 404
    assert get(app, f"/300x200/{imageid}.jpeg").status_int == 200


def get_in_thread(app, path: str):
    """Start a GET of ``path`` in a thread; returns a function that waits for its answer."""
    answers = []
    thread = threading.Thread(target=lambda: answers.append(get(app, path)))
    thread.start()

    def answer():
        thread.join(30)
        return answers[0]

    return answer


def wait_until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.01)


DAMAGED = {
    "empty": b"",
    "truncated": f.photo_jpeg(300, 200)[:400],
    "no image": b"<html>not an image at all</html>",
    "bomb header": f.declared_size_jpeg(60000, 60000),
}


def _quirky_jpeg() -> bytes:
    """A stray byte between two segments: the marker walk refuses it, decoders do not."""
    data = f.photo_jpeg(300, 200, seed=9)
    app0_end = 4 + int.from_bytes(data[4:6], "big")
    return data[:app0_end] + b"\x00" + data[app0_end:]


def test_a_quirky_stored_original_is_still_served_as_is(app, store):
    """The marker walk refuses it, the decoder reads it: uploaded and stored as it is."""
    quirky = _quirky_jpeg()
    imageid = store.save_image(quirky)
    assert get(app, f"/o/{imageid}.jpeg").body == quirky
    assert Image.open(io.BytesIO(get(app, f"/100x100/{imageid}.jpeg").body)).size == (100, 67)
    assert is_live(store.catalog.get(imageid))


@pytest.mark.parametrize("kind", sorted(DAMAGED))
@pytest.mark.parametrize("size", ["o", "100x100"])
def test_a_damaged_stored_original_is_404_and_marked_broken(app, store, kind, size):
    """Storage (or an older server) holds bytes no upload would pass: no 500, no bad bytes.
    Marked broken, never deleted; a header over the pixel limit is a limit (422), no mark."""
    imageid = store.save_image(f.photo_jpeg(300, 200, seed=len(kind)))  # small: no previews
    store.blobs.put(imageid, DAMAGED[kind], "image/jpeg", 300, 200)
    status = 422 if kind == "bomb header" else 404
    response = get(app, f"/{size}/{imageid}.jpeg")
    assert response.status_int == status, (kind, size, response.status, response.body[:100])
    doc = store.catalog.get(imageid)
    assert is_live(doc), doc
    if kind == "bomb header":
        assert "broken" not in doc
    elif not (kind == "empty" and "_attachments" in doc):  # an empty attachment is no original
        assert doc["broken"]["reason"], doc
    assert not store.cache.path(store.size_for(size).name, imageid).exists()
    assert get(app, f"/{size}/{imageid}.jpeg").status_int == status


def test_a_cache_that_cannot_exist_is_503_not_500(tmp_path):
    """A file where the cache directory should be: the server's trouble, retryable."""
    (tmp_path / "blocker").write_text("")
    app = make_app(Config(data_dir=tmp_path / "data", cache_dir=tmp_path / "blocker" / "cache"))
    imageid = app.store.save_image(f.solid_jpeg())
    for size in ("10x10", "o"):
        response = get(app, f"/{size}/{imageid}.jpeg")
        assert response.status_int == 503 and response.headers["Retry-After"], response.body
    assert is_live(app.store.catalog.get(imageid))


def test_a_miss_is_planned_once(tmp_path, monkeypatch):
    """One plan per miss: the catalog read once, the preview chosen once, the cache
    looked up once outside the single-flight lock and once inside (at most two lstat
    each), then the size directory checked after mkdir and the written file's stat for
    the answer: at most 5 lstat calls (12 before the plan)."""
    app = ImageMiddleware(prefix="", store=ImageStore(Config(data_dir=tmp_path / "data")))
    imageid = app.store.save_image(f.photo_jpeg(2400, 1800))
    catalog_reads = count_catalog_reads(app)
    from huimages_wsgi.store.renderer import Renderer

    chosen, preview_for = [], Renderer.preview_for

    def counted_preview_for(*args, **kwargs):
        chosen.append(args)
        return preview_for(*args, **kwargs)

    monkeypatch.setattr(Renderer, "preview_for", staticmethod(counted_preview_for))
    lstats, lstat = [], os.lstat

    def counted_lstat(path, *args, **kwargs):
        if "321x123" in os.fspath(path):
            lstats.append(os.fspath(path))
        return lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", counted_lstat)
    assert get(app, f"/321x123/{imageid}.jpeg").status_int == 200
    monkeypatch.undo()
    assert (len(catalog_reads), len(chosen)) == (1, 1)
    assert len(lstats) <= 5, lstats


def test_a_request_for_a_variant_being_made_waits_for_it_instead_of_a_503(tmp_path):
    """The early refusal (before the catalog read) spares a request for a variant that
    another request is making: it waits in the single-flight lock, holding no slot."""
    from huimages_wsgi.cache.admission import RenderBusy

    config = Config(data_dir=tmp_path / "data", render_slots=1, render_wait=0.0)
    app = ImageMiddleware(prefix="", store=ImageStore(config))
    imageid = app.store.save_image(f.photo_jpeg(800, 600))
    rendering, go_on = threading.Event(), threading.Event()
    render = app.store.engine.render

    def slow_render(*args, **kwargs):
        rendering.set()
        assert go_on.wait(10)
        return render(*args, **kwargs)

    app.store.engine.render = slow_render
    catalog_reads = count_catalog_reads(app)
    url, answers = f"/300x200/{imageid}.jpeg", []
    threads = [threading.Thread(target=lambda: answers.append(get(app, url))) for _ in range(2)]
    threads[0].start()
    assert rendering.wait(10)
    with pytest.raises(RenderBusy):  # the one slot is taken and no wait is allowed
        app.admission.check_room()
    assert app.store.cache.being_made("300x200", imageid, "jpeg")
    threads[1].start()
    wait_until(lambda: len(catalog_reads) == 2)  # past the early check, on to the lock
    go_on.set()
    for thread in threads:
        thread.join(20)
    assert [a.status_int for a in answers] == [200, 200]
    assert not app.store.cache.being_made("300x200", imageid, "jpeg")
