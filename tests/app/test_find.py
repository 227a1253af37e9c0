"""Finding images by what the application knows (issue 24, point 5): references, types
and tags, through the store, the module API, the HTTP API and the client over HTTP, on
the embedded default and on S3+CouchDB."""

from __future__ import annotations

import pytest
from webob import Request

import huimages_wsgi
from huimages_wsgi import Config, make_app
from huimages_wsgi.store.finding import InvalidSearch, find_images, tag_counts
from huimages_wsgi.store.httpstore import HttpImageStore

from .. import imagefactory as f
from ..conftest import LiveServer
from .test_browse import HOST, LOCAL

BOTH = pytest.mark.parametrize("backend", ["embedded", "s3+couch"], indirect=True)
TOKEN = "find-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def shop(store) -> dict[str, str]:
    """Three products and a photo of the shop, as an application would keep them."""
    ids = {
        "bike": store.save_image(f.photo_jpeg(300, 200, seed=31), title="Red bike",
                                 references={"sku": "14600", "ean": "4005"}, typ="product"),
        "bell": store.save_image(f.photo_jpeg(300, 200, seed=32), title="Bell",
                                 references={"sku": "14601"}, typ="product"),
        "lamp": store.save_image(f.photo_jpeg(300, 200, seed=33), title="Lamp",
                                 references={"sku": "14600"}, typ="product"),
        "shop": store.save_image(f.photo_jpeg(300, 200, seed=34), title="Our shop"),
    }
    store.update_metadata(ids["bike"], tags=["red", "outdoor"])
    store.update_metadata(ids["bell"], tags=["red"])
    store.update_metadata(ids["shop"], tags=["outdoor"], timestamp="20200101T000000")
    store.update_metadata(ids["bike"], tags=["red"])  # tags accumulate like titles: once
    return ids


@BOTH
def test_find_by_reference_type_and_tag_newest_first(any_store):
    ids = shop(any_store)
    catalog = any_store.catalog
    assert set(find_images(catalog, {"sku": "14600"})) == {ids["bike"], ids["lamp"]}
    assert find_images(catalog, {"sku": 14600}) == find_images(catalog, {"sku": "14600"})
    assert find_images(catalog, {"ean": "4005"}) == [ids["bike"]]
    assert find_images(catalog, {"sku": "99999"}) == []
    assert set(find_images(catalog, typ="product")) == {ids["bike"], ids["bell"], ids["lamp"]}
    assert set(find_images(catalog, tag="red")) == {ids["bike"], ids["bell"]}
    assert find_images(catalog, {"sku": "14600"}, tag="red") == [ids["bike"]]  # all of them
    assert find_images(catalog, {"ean": "4005"}, tag="outdoor", typ="product") == [ids["bike"]]
    assert len(find_images(catalog, typ="product", limit=2)) == 2
    assert tag_counts(catalog) == [("outdoor", 2), ("red", 2)]
    assert any_store.get_imagedoc(ids["bike"])["tags"] == ["red", "outdoor"]
    newest = find_images(catalog, {"sku": "14600"})
    ctimes = [any_store.get_imagedoc(imageid)["ctime"] for imageid in newest]
    assert ctimes == sorted(ctimes, reverse=True)


@BOTH
def test_values_that_are_no_text_are_found_alike_on_every_catalog(any_store):
    imageid = any_store.save_image(f.photo_jpeg(200, 150, seed=37), references={
        "flag": True, "width": 2.0, "ratio": 2.5, "count": 3, "tag": "a reference named tag"})
    catalog = any_store.catalog
    for criteria in ({"flag": True}, {"flag": "true"}, {"width": 2}, {"width": "2"},
                     {"ratio": 2.5}, {"count": "3"}, {"tag": "a reference named tag"}):
        assert find_images(catalog, criteria) == [imageid], criteria
    assert find_images(catalog, {"flag": "True"}) == []  # JavaScript's spelling, everywhere


@BOTH
def test_a_deleted_image_is_found_no_more(any_store):
    ids = shop(any_store)
    any_store.delete_image(ids["bike"])
    assert find_images(any_store.catalog, {"sku": "14600"}) == [ids["lamp"]]
    assert tag_counts(any_store.catalog) == [("outdoor", 1), ("red", 1)]
    again = any_store.save_image(f.photo_jpeg(300, 200, seed=31))  # the same bytes again
    assert again == ids["bike"]
    assert ids["bike"] in find_images(any_store.catalog, {"sku": "14600"})  # its document kept


def test_a_catalog_written_before_the_index_is_indexed_once(config, tmp_path):
    """An SQLite catalog of an earlier version has no term table: it is filled on open."""
    store = huimages_wsgi.ImageStore(config)
    imageid = store.save_image(f.solid_jpeg(), references={"sku": "1"})
    with store.catalog._connection() as conn:  # noqa: SLF001 - the test plays the old version
        conn.execute("DELETE FROM terms")
        conn.execute("DELETE FROM meta WHERE key = 'terms'")
    reopened = huimages_wsgi.ImageStore(config)
    assert find_images(reopened.catalog, {"sku": "1"}) == [imageid]


@pytest.mark.parametrize("criteria", [{}, {"sku": ""}, {"tag": ""}])
def test_a_lookup_says_what_to_find(config, criteria):
    store = huimages_wsgi.ImageStore(config)
    references = {k: v for k, v in criteria.items() if k != "tag"}
    with pytest.raises(InvalidSearch):
        find_images(store.catalog, references, tag=criteria.get("tag"))


@BOTH
def test_the_module_api_finds_and_tags(any_config):
    huimages_wsgi.configure(any_config)
    imageid = huimages_wsgi.save_image(f.photo_jpeg(200, 150, seed=35),
                                       references={"sku": "14600"})
    assert huimages_wsgi.update_metadata(imageid, tags=["blue"]) == imageid
    assert huimages_wsgi.find_images(sku="14600") == [imageid]
    assert huimages_wsgi.find_images(tag="blue") == [imageid]
    tagged = huimages_wsgi.save_image(f.photo_jpeg(200, 150, seed=38), tags=["blue", "new"])
    assert huimages_wsgi.find_images(tag="new") == [tagged]  # tags at upload, like a title
    assert set(huimages_wsgi.find_images(tag="blue")) == {imageid, tagged}


@BOTH
def test_the_http_api_finds_and_counts(any_config):
    app = make_app(any_config.with_changes(upload_token=TOKEN))
    ids = shop(app.store)

    def get(path):
        return Request.blank(path, headers=AUTH).get_response(app)

    found = get("/_api/images?reference.sku=14600&tag=red")
    assert found.status_int == 200 and found.json == {"ids": [ids["bike"]]}
    assert set(get("/_api/images?type=product&limit=5").json["ids"]) == {
        ids["bike"], ids["bell"], ids["lamp"]}
    assert get("/_api/tags").json == {"tags": [["outdoor", 2], ["red", 2]]}
    assert get("/_api/tags?limit=1").json == {"tags": [["outdoor", 2]]}
    upload = Request.blank('/_api/images?tags=%5B%22fresh%22%5D', method="POST", headers={
        **AUTH, "Content-Type": "image/jpeg"}, body=f.photo_jpeg(200, 150, seed=39))
    uploaded = upload.get_response(app)
    assert uploaded.status_int == 201 and get("/_api/images?tag=fresh").json == {
        "ids": [uploaded.json["id"]]}
    for bad in ("%5B%22%22%5D", "red", "%5B1%5D"):  # [""], not JSON, [1]
        refused = Request.blank(f"/_api/images?tags={bad}", method="POST", headers={
            **AUTH, "Content-Type": "image/jpeg"}, body=f.solid_jpeg()).get_response(app)
        assert refused.status_int == 400, bad
    named_tag = get("/_api/images?reference.tag=x&reference.limit=1&reference.typ=2")
    assert named_tag.status_int == 200 and named_tag.json == {"ids": []}  # never a 500
    assert Request.blank("/_api/images?tag=red").get_response(app).status_int == 401
    assert Request.blank("/_api/tags").get_response(app).status_int == 401
    patch = Request.blank(f"/_api/images/{ids['lamp']}", method="PATCH", headers={
        **AUTH, "Content-Type": "application/json"}, body=b'{"tags": ["red"]}')
    assert patch.get_response(app).json["tags"] == ["red"]
    assert ids["lamp"] in get("/_api/images?tag=red").json["ids"]
    for bad in (b'{"tags": "red"}', b'{"tags": [""]}', b'{"tags": [1]}'):
        refused = Request.blank(f"/_api/images/{ids['lamp']}", method="PATCH", headers={
            **AUTH, "Content-Type": "application/json"}, body=bad).get_response(app)
        assert refused.status_int == 400, bad


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_the_client_over_http_finds_and_tags(any_config, tmp_path):
    live = LiveServer(tmp_path / "server", env={"HUIMAGES_UPLOAD_TOKEN": TOKEN}).start()
    try:
        remote = HttpImageStore(Config(data_dir=tmp_path / "client", server_url=live.url + "/",
                                       api_url=live.url, upload_token=TOKEN))
        imageid = remote.save_image(f.photo_jpeg(200, 150, seed=36), references={"sku": "7"},
                                    tags=["at-upload"])
        assert find_images(remote.catalog, tag="at-upload") == [imageid]
        remote.update_metadata(imageid, tags=["green"])
        assert find_images(remote.catalog, {"sku": "7"}) == [imageid]
        assert find_images(remote.catalog, {"sku": "7"}, tag="green") == [imageid]
        assert tag_counts(remote.catalog) == [("at-upload", 1), ("green", 1)]
    finally:
        live.stop()


@BOTH
def test_the_browse_page_lists_tags_with_counts_and_their_images(any_config):
    app = make_app(any_config.with_changes(browse=True))
    ids = shop(app.store)
    app.store.update_metadata(ids["lamp"], tags=['<b>"&x'])
    environ = {**LOCAL, "HTTP_HOST": HOST}

    def page(query=""):
        response = Request.blank(f"/_browse/{query}", environ=environ).get_response(app)
        assert response.status_int == 200, response.text
        return response.text

    index = page()
    assert 'href="./?tag=outdoor">outdoor <small>2</small></a>' in index
    assert 'href="./?tag=red">red <small>2</small></a>' in index
    red = page("?tag=red")
    assert ids["bike"] in red and ids["bell"] in red
    assert ids["lamp"] not in red and ids["shop"] not in red
    assert 'class="tag current" href="./?tag=red"' in red
    assert "No images yet" in page("?tag=nothing")
    assert "<b>" not in index and "&lt;b&gt;&quot;&amp;x" in index  # escaped, as every text
    assert ids["lamp"] in page("?tag=%3Cb%3E%22%26x")
