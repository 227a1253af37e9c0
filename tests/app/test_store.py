"""The client API: ImageStore and the module-level functions of the original."""

import datetime
import errno
import io
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, BinaryIO, NoReturn

import pytest
from PIL import Image
from webob import Request

import huimages_wsgi as huimages
from huimages_wsgi import Config, ImageMiddleware, ImageStore
from huimages_wsgi.cache.directory import Cache
from huimages_wsgi.core.errors import (
    BackendUnavailable,
    ImageNotFound,
    ImageTooLarge,
    InvalidImage,
    InvalidImageId,
    InvalidSize,
    SizeNotAllowed,
    WriteFailed,
)
from huimages_wsgi.core.ids import compute_id
from huimages_wsgi.storage import is_live
from huimages_wsgi.store import module_api as client

from .. import imagefactory as f
from ..backends import primary_has


@pytest.fixture
def config(any_config):
    """Every test here that takes ``store`` runs on each backend combination."""
    return any_config


@pytest.fixture
def store(any_store):
    return any_store


@pytest.fixture
def module_api(tmp_path, monkeypatch) -> ImageStore:
    """The module-level API on a fresh embedded store; the previous default store is put
    back afterwards, so no other test meets this one's."""
    monkeypatch.setattr(client, "_default", client._default)
    return huimages.configure(data_dir=tmp_path / "data", server_url="http://images.example.com")


def test_the_seed_client_session(module_api):
    """The session from the original README, through the module-level API."""
    data = f.photo_jpeg(1024, 768)
    imageid = huimages.save_image(data, title="Snow & Ice", references={"artnr": "14600"})
    assert len(imageid) == 34 and imageid.endswith("01")
    assert huimages.imageurl(imageid) == f"http://images.example.com/o/{imageid}.jpeg"
    assert huimages.scaled_imageurl(imageid, "150x150!") == (
        f"http://images.example.com/150x150!/{imageid}/snow-ice.jpeg"
    )
    assert huimages.get_length(imageid) == len(data)
    assert huimages.scaled_dimensions(imageid, "150x150") == (150, 113)
    assert huimages.scaled_dimensions(imageid, "150x150!") == (150, 150)
    assert Image.open(
        __import__("io").BytesIO(huimages.scaled_imagedata(imageid, "150x150"))
    ).size == (150, 113)


def test_every_module_level_function_reaches_the_default_store(module_api):
    """The rest of the original module API (the seed session above covers the others)."""
    ids = sorted(huimages.save_image(f.solid_jpeg(400, 200, colour=(i * 60, 0, 0)))
                 for i in range(3))
    first, middle, last = ids
    assert huimages.default_store() is module_api
    assert huimages.get_next_imageid(first) == middle
    assert huimages.get_previous_imageid(last) == middle
    assert huimages.get_previous_imageid(first) == first  # the start: itself, as huImages
    assert huimages.get_random_imageid() in ids

    assert huimages.update_metadata(middle, None, "Red", {"artnr": "1"}, "product") == middle
    doc = huimages.get_imagedoc(middle)
    assert (doc["title"], doc["references"], doc["types"]) == (["Red"], {"artnr": ["1"]},
                                                               ["product"])
    assert huimages.set_title(middle, "Dark red")["title"] == ["Red", "Dark red"]
    assert module_api.get_imagedoc(middle)["title"] == ["Red", "Dark red"]

    tag = huimages.scaled_tag(middle, "200x200", **{"class": "thumb"})
    # saved untitled: its URLs keep the file's name for good; alt is the newest title
    assert tag == (f'<img src="http://images.example.com/200x200/{middle}/image.jpeg" '
                   'width="200" height="100" class="thumb" alt="Dark red" />')

    webp = huimages.scaled_imagedata(middle, "200x200", ext="webp")
    assert Image.open(io.BytesIO(webp)).format == "WEBP"
    assert Image.open(io.BytesIO(huimages.scaled_imagedata(middle, "200x200"))).size == (200, 100)

    huimages.delete_image(middle)
    with pytest.raises(ImageNotFound):
        module_api.get_imagedoc(middle)
    assert huimages.get_next_imageid(first) == last
    assert not primary_has(module_api, middle)


def test_same_bytes_same_id_and_metadata_merges(store):
    data = f.solid_jpeg()
    first = store.save_image(
        data,
        title="one",
        references={"a": "1"},
        typ="product_image",
        timestamp=datetime.datetime(2009, 1, 29, 12, 0, 0),
    )
    doc1 = store.get_imagedoc(first)
    second = store.save_image(
        data, title="two", references={"a": "2", "b": "3"}, typ="product_image"
    )
    doc2 = store.get_imagedoc(second)
    assert first == second
    assert doc2["title"] == ["one", "two"]
    assert doc2["references"] == {"a": ["1", "2"], "b": ["3"]}
    assert doc2["types"] == ["product_image"]
    assert doc2["ctime"] == doc1["ctime"] == "20090129T120000.000000"
    assert doc2["mtime"] > doc1["mtime"]
    assert (doc2["width"], doc2["height"], doc2["length"]) == (64, 48, len(data))
    assert doc2["contenttype"] == "image/jpeg" and doc2["deleted"] is False


def test_scaled_tag_escapes_values_and_keeps_the_first_title_in_its_url(tmp_path):
    """huImages 2.2 named the URL after the first title and the alt text after the
    newest, and appended HUIMAGESALTADDITION as it is (it brings its own separator)."""
    store = ImageStore(
        Config(data_dir=tmp_path, server_url="http://i.example.com/", alt_addition=" - Shop")
    )
    imageid = store.save_image(f.solid_jpeg(400, 200), title='A "quoted" <b>title</b>')
    before = store.scaled_tag(imageid, "200x200")
    store.set_title(imageid, 'A "quoted" <b>title</b> again')
    tag = store.scaled_tag(imageid, "200x200", **{"class": "thumb<x>"})
    assert tag.startswith(f'<img src="http://i.example.com/200x200/{imageid}/a-quoted-b-title-b.jpeg"')
    assert before.split()[1] == tag.split()[1]  # the same src: a new title moves no URL
    assert 'width="200" height="100"' in tag
    assert 'alt="A &quot;quoted&quot; &lt;b&gt;title&lt;/b&gt; again - Shop"' in tag
    assert 'class="thumb&lt;x&gt;"' in tag and "<b>" not in tag and tag.endswith("/>")


def test_presets_in_urls_resolve_to_their_box(store):
    imageid = store.save_image(f.solid_jpeg())
    # no title: named after the file, as huImages did (the default file name here)
    assert store.scaled_imageurl(imageid, "square").endswith(f"/75x75!/{imageid}/image.jpeg")
    assert store.imageurl(imageid, "thumb").endswith(f"/thumb/{imageid}.jpeg")


def test_browsing(store):
    ids = sorted(store.save_image(f.solid_jpeg(colour=(i * 40, 0, 0))) for i in range(4))
    assert store.get_next_imageid(ids[0]) == ids[1]
    assert store.get_previous_imageid(ids[2]) == ids[1]
    assert store.get_random_imageid() in ids
    store.delete_image(ids[1])
    assert store.get_next_imageid(ids[0]) == ids[2]


def test_delete_removes_original_and_cache_and_can_be_undone_by_upload(store):
    data = f.solid_jpeg()
    imageid = store.save_image(data)
    cached = store.variant_path(imageid, store.size_for("10x10"))
    store.delete_image(imageid)
    assert not cached.exists() and not primary_has(store, imageid)
    with pytest.raises(ImageNotFound):
        store.get_imagedoc(imageid)
    with pytest.raises(ImageNotFound):
        store.variant_path(imageid, store.size_for("20x20"))
    assert store.scaled_dimensions(imageid, "10x10") == (None, None)
    assert store.save_image(data) == imageid
    assert store.get_imagedoc(imageid)["deleted"] is False


def _outage(exc: Exception) -> Callable[..., None]:
    def fail(*args: object) -> None:
        raise exc

    return fail


@pytest.mark.parametrize(
    "part, method, exc",
    [
        ("blobs", "delete", BackendUnavailable("blob store unreachable")),
        ("cache", "purge", PermissionError(errno.EACCES, "Permission denied")),
    ],
)
def test_a_delete_that_fails_midway_is_completed_by_deleting_again(store, part, method, exc):
    """Bytes first: a blob store failure leaves the image live, so deleting again does it
    all; a cache failure comes after the mark, and deleting again finishes the purge."""
    imageid = store.save_image(f.solid_jpeg())
    cached = store.variant_path(imageid, store.size_for("10x10"))
    target = getattr(store, part)
    setattr(target, method, _outage(exc))  # on the instance: the class is untouched
    try:
        with pytest.raises(type(exc)):
            store.delete_image(imageid)
    finally:
        delattr(target, method)
    if part == "blobs":
        assert store.get_imagedoc(imageid) and primary_has(store, imageid)  # nothing lost
        store.delete_image(imageid)
    else:
        assert not primary_has(store, imageid) and cached.exists()
        with pytest.raises(ImageNotFound):
            store.get_imagedoc(imageid)
        with pytest.raises(ImageNotFound):
            store.delete_image(imageid)
    assert not primary_has(store, imageid) and not cached.exists()
    with pytest.raises(ImageNotFound):
        store.get_imagedoc(imageid)


def test_deleting_again_never_touches_the_bytes_of_a_reupload(store):
    """A re-upload of the same bytes writes the blob before it revives the document."""
    data = f.solid_jpeg(70, 50)
    imageid = store.save_image(data)
    store.delete_image(imageid)
    store.blobs.put(imageid, data, "image/jpeg", 70, 50)  # a re-upload, half way
    with pytest.raises(ImageNotFound):
        store.delete_image(imageid)  # a client retrying its delete meanwhile
    assert store.blobs.exists(imageid)
    assert store.save_image(data) == imageid  # the re-upload completes: nothing is missing
    assert store.scaled_imagedata(imageid, "o") == data


def test_deleting_an_id_the_catalog_never_had_touches_nothing(tmp_path):
    """Uploads store the bytes before the catalog entry: such a blob may be one in progress."""
    store = ImageStore(Config(data_dir=tmp_path / "data"))
    data = f.solid_jpeg()
    imageid = compute_id(data)
    store.blobs.put(imageid, data, "image/jpeg", 64, 48)
    with pytest.raises(ImageNotFound):
        store.delete_image(imageid)
    assert store.blobs.exists(imageid)


class FullDiskCache(Cache):
    """A cache on a full disk: every variant write, or its flush at close, fails with ENOSPC."""

    def produce(
        self, size_name: str, imageid: str, ext: str, write: Callable[[BinaryIO], object],
        admitted: Callable[[], Any] = nullcontext, mtime: float | None = None,
    ) -> NoReturn:
        with admitted(), io.BufferedWriter(f.FullDisk()) as handle:
            write(handle)
        raise AssertionError("a full disk took the variant")


@pytest.mark.parametrize("size", ["o", "10x10", "1024x1024"])  # copied, from a preview, rendered
def test_a_full_cache_disk_is_a_503_and_never_marks_the_image_broken(store, size):
    imageid = store.save_image(f.photo_jpeg(1600, 1200))
    healthy = store.cache
    store.cache = FullDiskCache(healthy.root)
    with pytest.raises(WriteFailed) as caught:
        store.variant_path(imageid, store.size_for(size))
    assert caught.value.status == 503
    doc = store.get_imagedoc(imageid)  # raises ImageNotFound if it was marked deleted
    assert "broken" not in doc
    store.cache = healthy  # once there is room again, the variant is made
    assert store.variant_path(imageid, store.size_for(size)).stat().st_size > 0


def test_a_full_cache_disk_answers_503_with_retry_after(tmp_path):
    store = ImageStore(Config(data_dir=tmp_path / "data"))
    imageid = store.save_image(f.photo_jpeg(800, 600))
    store.cache = FullDiskCache(store.cache.root)
    app = ImageMiddleware(prefix="", store=store)
    for path in (f"/200x200/{imageid}.jpeg", f"/o/{imageid}.jpeg"):
        response = Request.blank(path).get_response(app)
        assert response.status_int == 503 and response.headers["Retry-After"], path
    assert store.get_imagedoc(imageid)["deleted"] is False


def test_scaled_dimensions_checks_the_size_as_the_server_does(tmp_path):
    """No prediction for a variant the server refuses: over the maximum, or not allowed."""
    config = Config(data_dir=tmp_path / "data", max_dimension=500,
                    allowed_sizes={"square", "240x160", "600x600!", "700x700"})
    store = ImageStore(config)
    imageid = store.save_image(f.solid_jpeg(400, 200))
    assert store.scaled_dimensions(imageid, "square") == (75, 75)
    assert store.scaled_dimensions(imageid, "240x160") == (240, 120)
    app = ImageMiddleware(prefix="", store=store)
    for size, refusal in [("100x100!", SizeNotAllowed), ("100x100", SizeNotAllowed),
                          ("600x600!", InvalidSize), ("700x700", InvalidSize)]:
        with pytest.raises(refusal):
            store.scaled_dimensions(imageid, size)
        served = Request.blank(f"/{size}/{imageid}.jpeg").get_response(app)
        assert served.status_int == refusal.status, size


def test_update_metadata(store):
    imageid = store.save_image(f.solid_jpeg(), title="a")
    store.update_metadata(imageid, title="b", references={"k": "v"}, typ="t")
    doc = store.get_imagedoc(imageid)
    assert (
        doc["title"] == ["a", "b"] and doc["references"] == {"k": ["v"]} and doc["types"] == ["t"]
    )
    with pytest.raises(ImageNotFound):
        store.update_metadata("A" * 32 + "01", title="x")


def test_bad_input_is_rejected_without_storing_anything(store):
    for bad in (b"", b"not an image", f.tga_image(), f.photo_jpeg(400, 300)[:3000]):
        with pytest.raises(InvalidImage):
            store.save_image(bad)
    with pytest.raises(InvalidImage):
        store.save_image("a string")
    assert list(store.catalog.ids(include_deleted=True)) == []


def test_upload_size_limit(tmp_path):
    store = ImageStore(Config(data_dir=tmp_path, max_upload_bytes=1000))
    with pytest.raises(ImageTooLarge):
        store.save_image(f.photo_jpeg(400, 300))


def test_invalid_ids_are_rejected_everywhere(store):
    for call in (
        store.get_imagedoc,
        store.delete_image,
        store.imageurl,
        store.get_length,
        store.get_next_imageid,
        store.purge,
        store.scaled_dimensions,  # its default size is a crop, which needs no lookup
    ):
        with pytest.raises(InvalidImageId):
            call("../etc/passwd")


def test_undecodable_stored_original_is_marked_broken(store, caplog):
    data = f.solid_jpeg()
    imageid = store.save_image(data)
    store.blobs.put(imageid, data[:300], "image/jpeg", 1, 1)  # damaged in storage after upload
    with pytest.raises(ImageNotFound):
        store.variant_path(imageid, store.size_for("10x10"))
    doc = store.catalog.get(imageid)
    assert not doc["deleted"] and doc["broken"]["reason"] and doc["broken"]["time"]
    assert "broken" in caplog.text
    caplog.clear()
    with pytest.raises(ImageNotFound):
        store.variant_path(imageid, store.size_for("20x20"))
    assert "broken" not in caplog.text  # logged once


def test_two_stores_in_one_process(tmp_path):
    one = ImageStore(Config(data_dir=tmp_path / "one", server_url="http://one/"))
    two = ImageStore(Config(data_dir=tmp_path / "two", server_url="http://two/"))
    imageid = one.save_image(f.solid_jpeg())
    assert one.imageurl(imageid).startswith("http://one/")
    with pytest.raises(ImageNotFound):
        two.get_imagedoc(imageid)


class FailingRead(io.RawIOBase):
    """An original's file that fails with EIO after ``good`` bytes, as a dying disk does."""

    def __init__(self, inner, good: int) -> None:
        self.inner, self.left = inner, good

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.left <= 0:
            raise OSError(errno.EIO, "Input/output error")
        data = self.inner.read(min(len(buffer), self.left))
        self.left -= len(data)
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.inner.close()
        super().close()


@pytest.mark.parametrize("size", ["o", "100x100", "100x100!"])
def test_a_failing_read_of_the_original_is_503_and_never_marks_it_broken(tmp_path, size):
    """Pillow calls corrupt data an OSError too; the disk's own errors must not count as such."""
    store = ImageStore(Config(data_dir=tmp_path / "data"))
    imageid = store.save_image(f.photo_jpeg(300, 200))  # small: rendered from the original
    healthy_open = store.blobs.open
    store.blobs.open = lambda i: io.BufferedReader(FailingRead(healthy_open(i), 2000))
    with pytest.raises(BackendUnavailable, match="cannot read the original"):
        store.variant_path(imageid, store.size_for(size))
    assert is_live(store.catalog.get(imageid))
    assert not store.cache.path(store.size_for(size).name, imageid).exists()
    store.blobs.open = healthy_open  # the disk recovers: so does the image
    assert store.variant_path(imageid, store.size_for(size)).stat().st_size > 0


def test_a_failing_read_during_a_previews_run_is_counted_not_fatal(tmp_path):
    """``huimages previews --all`` goes on past an original the disk cannot read."""
    from huimages_wsgi.node.parallel import FAILED, previews_step, run_jobs
    from huimages_wsgi.store.backfill import MADE

    store = ImageStore(Config(data_dir=tmp_path / "data"))
    unreadable, fine = (store.save_image(f.photo_jpeg(1600, 1200, seed=s)) for s in (3, 4))
    for imageid in (unreadable, fine):  # as if stored before previews existed
        store.catalog.update(imageid, lambda doc: doc.pop("previews", None))
    healthy_open = store.blobs.open
    store.blobs.open = lambda i: (io.BufferedReader(FailingRead(healthy_open(i), 2000))
                                  if i == unreadable else healthy_open(i))
    outcomes = dict(run_jobs(store.config, lambda _: store, previews_step, [unreadable, fine], 1))
    assert outcomes == {unreadable: FAILED, fine: MADE}
    assert is_live(store.catalog.get(unreadable))
