"""'Broken' never means deleted: limits refuse requests and leave images alone, a mark
from a failed decode keeps the image in the catalog, and ``huimages check`` re-tests
marks, including the deleted+broken ones older versions left (embedded and S3+CouchDB).
"""

from __future__ import annotations

import json

import pytest
from webob import Request

from huimages_wsgi import ImageMiddleware, ImageStore, make_app
from huimages_wsgi.cli.main import main
from huimages_wsgi.core.errors import ImageBroken, ImageNotFound
from huimages_wsgi.node.parallel import check_step, run_jobs
from huimages_wsgi.storage import is_live
from huimages_wsgi.store.broken import (
    CLEARED,
    DELETED,
    MARKED,
    NO_ORIGINAL,
    OK,
    OVER_LIMIT,
    REPAIRED,
    STILL_BROKEN,
    check_image,
    marked_ids,
)

from .. import imagefactory as f
from ..backends import backend_store

BOTH = pytest.mark.parametrize("backend", ["embedded", "s3+couch"], indirect=True)


def get(app, path, **kwargs):
    return Request.blank(path, **kwargs).get_response(app)


def old_mark(store: ImageStore, imageid: str, reason: str = "cannot decode image: x") -> None:
    """What huImages and this package before 1.1 did to an original that failed."""
    store.catalog.update(imageid, lambda doc: doc.update(deleted=True, broken=reason))


@BOTH
def test_lowering_and_raising_the_pixel_limit_hides_nothing(backend, any_config, photo_8mp):
    """The issue's story: HUIMAGES_MAX_PIXELS lowered for a while, then raised again."""
    normal = backend_store(backend, any_config)
    imageid = normal.save_image(photo_8mp)
    lowered = backend_store(backend, any_config.with_changes(max_pixels=4_000_000))
    app = ImageMiddleware(prefix="", store=lowered)
    for path in (f"/1200x1200/{imageid}.jpeg", f"/o/{imageid}.jpeg", f"/75x75!/{imageid}.webp"):
        response = get(app, path)
        if "75x75" in path and response.status_int == 200:
            continue  # a small size renders from a preview, which is under the limit: fine
        assert response.status_int == 422, (path, response.status, response.text)
        assert "limit" in response.text
    doc = lowered.get_imagedoc(imageid)
    assert is_live(doc) and "broken" not in doc
    assert not lowered.cache.path("1200x1200", imageid).exists()
    raised = ImageMiddleware(prefix="", store=normal)
    assert get(raised, f"/1200x1200/{imageid}.jpeg").status_int == 200
    assert get(raised, f"/o/{imageid}.jpeg").body == photo_8mp


@BOTH
def test_a_damaged_original_is_marked_not_deleted_and_check_clears_the_mark(any_store):
    data = f.photo_jpeg(400, 300, seed=4)
    imageid = any_store.save_image(data)
    any_store.blobs.put(imageid, data[:500], "image/jpeg", 400, 300)  # damaged in storage
    config = any_store.config.with_changes(upload_token="t" * 16)
    app = make_app(store=ImageStore(config, catalog=any_store.catalog, blobs=any_store.blobs))
    response = get(app, f"/100x100/{imageid}.jpeg")
    assert response.status_int == 404
    doc = any_store.get_imagedoc(imageid)  # still there: live, marked
    assert not doc["deleted"] and doc["broken"]["reason"] and doc["broken"]["time"]
    api = get(app, f"/_api/images/{imageid}", headers={"Authorization": "Bearer " + "t" * 16})
    assert api.status_int == 200 and api.json["broken"] == doc["broken"]
    assert imageid in any_store.catalog.ids() and any_store.get_random_imageid() == imageid
    # later requests answer from the mark, without decoding again
    with pytest.raises(ImageBroken, match="huimages check"):
        any_store.variant_path(imageid, any_store.size_for("50x50"))
    assert list(marked_ids(any_store)) == [imageid]
    assert check_image(any_store, imageid) == STILL_BROKEN
    any_store.blobs.put(imageid, data, "image/jpeg", 400, 300)  # restored from a backup
    assert check_image(any_store, imageid) == CLEARED
    assert "broken" not in any_store.get_imagedoc(imageid)
    again = get(app, f"/100x100/{imageid}.jpeg")
    assert again.status_int == 200, again.text
    assert check_image(any_store, imageid) == OK


@BOTH
def test_check_repairs_images_hidden_by_the_old_deleted_mark(any_store):
    healthy = any_store.save_image(f.photo_jpeg(300, 200, seed=1))
    damaged_data = f.photo_jpeg(300, 200, seed=2)
    damaged = any_store.save_image(damaged_data)
    gone = any_store.save_image(f.photo_jpeg(300, 200, seed=3))
    by_hand = any_store.save_image(f.photo_jpeg(300, 200, seed=4))
    for imageid in (healthy, damaged, gone):
        old_mark(any_store, imageid)
    any_store.blobs.put(damaged, damaged_data[:300], "image/jpeg", 300, 200)
    any_store.blobs.delete(gone)
    any_store.delete_image(by_hand)
    with pytest.raises(ImageNotFound):
        any_store.get_imagedoc(healthy)
    assert sorted(marked_ids(any_store)) == sorted([healthy, damaged, gone])
    ids = [healthy, damaged, gone, by_hand]
    outcomes = dict(run_jobs(any_store.config, lambda _: any_store, check_step, ids, 1))
    assert outcomes == {healthy: REPAIRED, damaged: STILL_BROKEN, gone: NO_ORIGINAL,
                        by_hand: DELETED}
    doc = any_store.get_imagedoc(healthy)
    assert doc["deleted"] is False and "broken" not in doc
    for imageid in (damaged, gone, by_hand):  # left exactly as they were: hidden
        assert not is_live(any_store.catalog.get(imageid))
    assert any_store.scaled_imagedata(healthy, "100x100")


def test_check_leaves_an_image_over_the_limit_alone(config, store):
    imageid = store.save_image(f.photo_jpeg(400, 300))
    store.mark_broken(imageid, "cannot decode image: from a decoder that lacked a plugin")
    small = ImageStore(config.with_changes(max_pixels=1000))
    assert check_image(small, imageid) == OVER_LIMIT
    assert small.get_imagedoc(imageid)["broken"]
    assert check_image(store, imageid) == CLEARED


def test_check_marks_a_given_image_that_does_not_decode(store):
    data = f.photo_jpeg(300, 200)
    imageid = store.save_image(data)
    store.blobs.put(imageid, data[:400], "image/jpeg", 300, 200)
    assert check_image(store, imageid) == MARKED
    doc = store.get_imagedoc(imageid)
    assert doc["broken"] and not doc["deleted"]


def test_a_reupload_clears_the_mark(store):
    data = f.photo_jpeg(300, 200)
    imageid = store.save_image(data)
    store.mark_broken(imageid, "whatever")
    assert store.save_image(data) == imageid
    assert "broken" not in store.get_imagedoc(imageid)


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("HUIMAGES_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IMAGESERVERURL", "http://i.example.com/")
    return tmp_path


def test_cli_check_and_info(env, capsys):
    good, bad = env / "good.jpg", env / "bad.jpg"
    good.write_bytes(f.photo_jpeg(300, 200, seed=1))
    bad.write_bytes(f.photo_jpeg(300, 200, seed=2))
    assert main(["put", str(good), str(bad)]) == 0
    good_id, bad_id = capsys.readouterr().out.split()
    store = ImageStore()
    old_mark(store, good_id)
    old_mark(store, bad_id)
    store.blobs.put(bad_id, b"\xff\xd8\xff\xe0 damaged", "image/jpeg", 1, 1)
    assert main(["info", good_id]) == 2
    assert f"huimages check {good_id}" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="either --all or image IDs"):
        main(["check"])
    assert main(["check", "--all"]) == 1  # one is still broken
    out = capsys.readouterr().out
    assert f"{good_id}: repaired" in out and f"{bad_id}: still broken" in out
    assert "1 repaired" in out and "1 still broken" in out
    assert main(["info", good_id]) == 0
    assert "broken" not in json.loads(capsys.readouterr().out)
    assert main(["check", good_id]) == 0
    assert f"{good_id}: ok" in capsys.readouterr().out


def test_the_follower_purges_an_image_marked_broken(config, store):
    """A node's cached variants of an image marked broken elsewhere go (docs/cluster.md);
    a change that keeps what the variants depend on purges nothing."""
    from huimages_wsgi.node.follower import Follower
    from huimages_wsgi.storage.base import Change

    imageid = store.save_image(f.photo_jpeg(400, 300))
    cached = store.variant_path(imageid, store.size_for("100x100"))
    follower = Follower(config, catalog=store.catalog)
    try:
        assert follower.handle(Change(1, imageid, store.catalog.get(imageid))) == 0
        store.set_title(imageid, "a title")
        assert follower.handle(Change(2, imageid, store.catalog.get(imageid))) == 0
        assert cached.is_file()
        store.mark_broken(imageid, "cannot decode image: broken data stream")
        assert follower.handle(Change(3, imageid, store.catalog.get(imageid))) == 1
        assert not cached.exists()
    finally:
        follower.close()
