"""The client API: ImageStore and the module-level functions of the original."""

import datetime

import pytest
from PIL import Image

import huimages_wsgi as huimages
from huimages_wsgi import Config, ImageStore
from huimages_wsgi.errors import ImageNotFound, ImageTooLarge, InvalidImage, InvalidImageId

from . import imagefactory as f
from .backends import primary_has


@pytest.fixture
def config(any_config):
    """Every test here that takes ``store`` runs on each backend combination."""
    return any_config


@pytest.fixture
def store(any_store):
    return any_store


def test_the_seed_client_session(tmp_path):
    """The session from the original README, through the module-level API."""
    huimages.configure(data_dir=tmp_path / "data", server_url="http://images.example.com")
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


def test_scaled_tag_escapes_and_uses_newest_title(tmp_path):
    store = ImageStore(
        Config(data_dir=tmp_path, server_url="http://i.example.com/", alt_addition="- Shop")
    )
    imageid = store.save_image(f.solid_jpeg(400, 200), title="old")
    store.set_title(imageid, 'A "quoted" <b>title</b>')
    tag = store.scaled_tag(imageid, "200x200", **{"class": "thumb<x>"})
    assert tag.startswith('<img src="http://i.example.com/200x200/' + imageid)
    assert 'width="200" height="100"' in tag
    assert 'alt="A &quot;quoted&quot; &lt;b&gt;title&lt;/b&gt; - Shop"' in tag
    assert 'class="thumb&lt;x&gt;"' in tag and "<b>" not in tag and tag.endswith("/>")


def test_presets_in_urls_resolve_to_their_box(store):
    imageid = store.save_image(f.solid_jpeg())
    assert store.scaled_imageurl(imageid, "square").endswith(f"/75x75!/{imageid}.jpeg")
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
    cached = store.variant(imageid, store.parse_size("10x10"))
    store.delete_image(imageid)
    assert not cached.exists() and not primary_has(store, imageid)
    with pytest.raises(ImageNotFound):
        store.get_imagedoc(imageid)
    with pytest.raises(ImageNotFound):
        store.variant(imageid, store.parse_size("20x20"))
    assert store.scaled_dimensions(imageid, "10x10") == (None, None)
    assert store.save_image(data) == imageid
    assert store.get_imagedoc(imageid)["deleted"] is False


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
    for bad in (b"", b"not an image", f.palette_png()):
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
    ):
        with pytest.raises(InvalidImageId):
            call("../etc/passwd")


def test_undecodable_stored_original_is_marked_broken(store, caplog):
    data = f.solid_jpeg()
    imageid = store.save_image(data)
    store.blobs.put(imageid, data[:300], "image/jpeg", 1, 1)  # damaged in storage after upload
    with pytest.raises(ImageNotFound):
        store.variant(imageid, store.parse_size("10x10"))
    doc = store.catalog.get(imageid)
    assert doc["deleted"] is True and doc["broken"]
    assert "broken" in caplog.text
    caplog.clear()
    with pytest.raises(ImageNotFound):
        store.variant(imageid, store.parse_size("20x20"))
    assert "broken" not in caplog.text  # logged once


def test_two_stores_in_one_process(tmp_path):
    one = ImageStore(Config(data_dir=tmp_path / "one", server_url="http://one/"))
    two = ImageStore(Config(data_dir=tmp_path / "two", server_url="http://two/"))
    imageid = one.save_image(f.solid_jpeg())
    assert one.imageurl(imageid).startswith("http://one/")
    with pytest.raises(ImageNotFound):
        two.get_imagedoc(imageid)
