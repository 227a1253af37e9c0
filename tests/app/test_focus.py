"""Focal points (issue 24, point 1): a crop (WxH!) is centred on the image's focus as
nearly as the edges allow; fits never move; URLs stay; every node's crops follow."""

from __future__ import annotations

import io
import json
import subprocess

import pytest
from PIL import Image
from webob import Request

import huimages_wsgi
from huimages_wsgi import ImageMiddleware, ImageStore, make_app
from huimages_wsgi.core.errors import ImageNotFound, InvalidFocus
from huimages_wsgi.core.geometry import crop_box
from huimages_wsgi.node.follower import Follower
from huimages_wsgi.store.focus import set_focus

from .. import imagefactory as f
from ..conftest import BIN

BOTH = pytest.mark.parametrize("backend", ["embedded", "s3+couch"], indirect=True)
TOKEN = "focus-token-0123456789"


def test_the_crop_box_follows_the_focus_and_stops_at_the_edges():
    assert crop_box(400, 200, 100, 100) == (100.0, 0.0, 300.0, 200.0)  # the middle
    assert crop_box(400, 200, 100, 100, (0.25, 0.5)) == (0.0, 0.0, 200.0, 200.0)  # clamped
    assert crop_box(400, 200, 100, 100, (0.5, 0.5)) == (100.0, 0.0, 300.0, 200.0)
    assert crop_box(400, 200, 100, 100, (0.6, 0.0)) == (140.0, 0.0, 340.0, 200.0)
    assert crop_box(400, 200, 100, 100, (1.0, 1.0)) == (200.0, 0.0, 400.0, 200.0)
    assert crop_box(200, 400, 100, 100, (0.5, 0.2)) == (0.0, 0.0, 200.0, 200.0)
    assert crop_box(200, 400, 100, 100, (0.5, 0.6)) == (0.0, 140.0, 200.0, 340.0)


def subject_photo(width: int, height: int, at: tuple[float, float]) -> bytes:
    """Grey, with one red disc (the subject) at ``at`` (fractions)."""
    img = Image.new("RGB", (width, height), (128, 128, 128))
    x, y, r = at[0] * width, at[1] * height, min(width, height) // 10
    from PIL import ImageDraw
    ImageDraw.Draw(img).ellipse((x - r, y - r, x + r, y + r), fill=(220, 20, 20))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=92)
    return out.getvalue()


def red_share(body: bytes) -> float:
    data = Image.open(io.BytesIO(body)).convert("RGB").tobytes()
    pixels = range(0, len(data), 3)
    return sum(1 for i in pixels if data[i] > 180 and data[i + 1] < 90) / len(pixels)


@BOTH
def test_a_crop_keeps_an_off_centre_subject_once_the_focus_is_set(any_config):
    any_store = ImageStore(any_config.with_changes(auto_focus=False))  # the set focus alone
    app = ImageMiddleware(prefix="", store=any_store)
    imageid = any_store.save_image(subject_photo(1200, 600, (0.12, 0.5)))
    square, fit = f"/150x150!/{imageid}.jpeg", f"/300x300/{imageid}.jpeg"
    before = Request.blank(square).get_response(app)
    fitted = Request.blank(fit).get_response(app).body
    assert red_share(before.body) == 0  # a centre crop loses the subject
    doc = set_focus(any_store, imageid, 0.12, 0.5)
    assert doc["focus"] == [0.12, 0.5] and doc["focus_time"]
    after = Request.blank(square).get_response(app)  # the same URL, made again
    assert red_share(after.body) > 0.02
    assert Request.blank(fit).get_response(app).body == fitted  # fits never move
    assert any_store.scaled_dimensions(imageid, "150x150!") == (150, 150)
    set_focus(any_store, imageid)  # cleared: the middle again
    assert red_share(Request.blank(square).get_response(app).body) == 0
    tall = Request.blank(f"/60x200!/{imageid}/subject.webp").get_response(app)
    assert tall.status_int == 200


def test_a_focus_change_moves_a_crops_last_modified(config):
    store = ImageStore(config.with_changes(auto_focus=False))
    app = ImageMiddleware(prefix="", store=store)
    imageid = store.save_image(subject_photo(800, 400, (0.2, 0.5)), timestamp="20150101T000000")
    first = Request.blank(f"/100x100!/{imageid}.jpeg").get_response(app)
    assert first.last_modified.year == 2015
    set_focus(store, imageid, 0.2, 0.5)
    again = Request.blank(f"/100x100!/{imageid}.jpeg").get_response(app)
    assert again.last_modified.year > 2015 and again.body != first.body
    fit = Request.blank(f"/100x100/{imageid}.jpeg").get_response(app)
    assert fit.last_modified.year == 2015  # a fit does not depend on the focus


@pytest.mark.parametrize("point", [(1.5, 0.5), (-0.1, 0.2), ("0.5", 0.5), (True, 0.5),
                                   (0.5, None)])
def test_a_focus_is_two_fractions(store, point):
    imageid = store.save_image(f.solid_jpeg())
    with pytest.raises(InvalidFocus):
        set_focus(store, imageid, *point)
    with pytest.raises(ImageNotFound):
        set_focus(store, "A" * 32 + "01", 0.5, 0.5)


def test_the_http_api_sets_and_clears_it(config):
    app = make_app(config.with_changes(upload_token=TOKEN))
    imageid = app.store.save_image(f.solid_jpeg())

    def patch(body):
        return Request.blank(f"/_api/images/{imageid}", method="PATCH", body=body, headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        ).get_response(app)

    assert patch(b'{"focus": [0.3, 0.7]}').json["focus"] == [0.3, 0.7]
    assert "focus" not in patch(b'{"focus": null}').json
    for bad in (b'{"focus": [2, 0]}', b'{"focus": "middle"}', b'{"focus": [0.5]}'):
        assert patch(bad).status_int == 400, bad


def test_the_module_api_and_the_cli_set_it(config, tmp_path):
    huimages_wsgi.configure(config)
    imageid = huimages_wsgi.save_image(f.solid_jpeg())
    assert huimages_wsgi.set_focus(imageid, 0.25, 0.75)["focus"] == [0.25, 0.75]
    env = {"HUIMAGES_DATA_DIR": str(config.data_dir), "PATH": str(BIN)}
    run = subprocess.run([str(BIN / "huimages"), "focus", imageid, "0.4", "0.6"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "0.4, 0.6" in run.stdout, run.stderr
    cleared = subprocess.run([str(BIN / "huimages"), "focus", imageid, "--clear"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert cleared.returncode == 0 and "middle" in cleared.stdout
    info = subprocess.run([str(BIN / "huimages"), "info", imageid], env=env,
                          capture_output=True, text=True, timeout=60)
    assert "focus" not in json.loads(info.stdout)
    wrong = subprocess.run([str(BIN / "huimages"), "focus", imageid, "0.4"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2


def test_another_nodes_follower_purges_its_crops(tmp_path):
    data = tmp_path / "data"
    here = ImageStore(huimages_wsgi.Config(data_dir=data, cache_dir=tmp_path / "cache-a",
                                           auto_focus=False))
    there_config = huimages_wsgi.Config(data_dir=data, cache_dir=tmp_path / "cache-b",
                                        auto_focus=False)
    there = ImageMiddleware(prefix="", store=ImageStore(there_config))
    follower = Follower(there_config, heartbeat=0.2)

    def follow() -> None:  # a few beats of the other node's follower
        stop = iter([False] * 5 + [True] * 1000)
        follower.follow_once(lambda: next(stop), seconds=1)

    follow()
    imageid = here.save_image(subject_photo(800, 400, (0.15, 0.5)))
    follow()  # it has seen the image
    crop = Request.blank(f"/100x100!/{imageid}.jpeg").get_response(there)
    assert red_share(crop.body) == 0
    set_focus(here, imageid, 0.15, 0.5)  # on the other node
    follow()
    assert not (tmp_path / "cache-b" / "100x100!" / f"{imageid}.jpeg").exists()
    assert red_share(Request.blank(f"/100x100!/{imageid}.jpeg").get_response(there).body) > 0.02
    follower.close()



def test_a_click_on_the_browse_page_sets_the_focus(tmp_path):
    from .test_browse import HOST, LOCAL
    app = make_app(huimages_wsgi.Config(data_dir=tmp_path / "data", browse=True,
                                        auto_focus=False))
    imageid = app.store.save_image(subject_photo(800, 400, (0.25, 0.5)))
    environ = {**LOCAL, "HTTP_HOST": HOST}
    page = Request.blank(f"/_browse/{imageid}", environ=environ).get_response(app)
    assert f'action="{imageid}/focus"' in page.text and 'name="at"' in page.text
    assert 'width="320" height="160"' in page.text and "now the middle" in page.text
    click = Request.blank(f"/_browse/{imageid}/focus", environ=environ, method="POST",
                          POST={"at.x": "80", "at.y": "80"})
    answer = click.get_response(app)
    assert answer.status_int == 303 and answer.location.endswith(f"/_browse/{imageid}")
    assert app.store.get_imagedoc(imageid)["focus"] == [0.25, 0.5]
    assert "now 0.25, 0.50" in Request.blank(f"/_browse/{imageid}", environ=environ
                                             ).get_response(app).text
    remote = Request.blank(f"/_browse/{imageid}/focus", method="POST",
                           environ={"REMOTE_ADDR": "192.0.2.1", "HTTP_HOST": HOST},
                           POST={"at.x": "0", "at.y": "0"}).get_response(app)
    assert remote.status_int == 403  # the page's rules: a local client, or the token
    cross = Request.blank(f"/_browse/{imageid}/focus", environ=environ, method="POST",
                          headers={"Origin": "https://evil.example"},
                          POST={"at.x": "0", "at.y": "0"}).get_response(app)
    assert cross.status_int == 403
    assert app.store.get_imagedoc(imageid)["focus"] == [0.25, 0.5]
    nothing = Request.blank(f"/_browse/{imageid}/focus", environ=environ, method="POST",
                            POST={"x": "1"}).get_response(app)
    assert nothing.status_int == 400


# -- automatic focus, colour and placeholder (issue 24, points 2 and 4) -------------------


@BOTH
@pytest.mark.parametrize("at", [(0.12, 0.5), (0.85, 0.3), (0.5, 0.12)])
def test_the_automatic_focus_keeps_a_clear_subject_in_tall_and_square_crops(any_store, at):
    app = ImageMiddleware(prefix="", store=any_store)
    wide = at[1] == 0.5 or at[0] != 0.5
    imageid = any_store.save_image(subject_photo(1200, 600, at) if wide
                                   else subject_photo(600, 1200, at))
    doc = any_store.get_imagedoc(imageid)
    x, y = doc["focus_auto"]
    assert abs(x - at[0]) < 0.1 and abs(y - at[1]) < 0.1, (doc["focus_auto"], at)
    for size in ("150x150!", "60x200!", "200x60!"):
        crop = Request.blank(f"/{size}/{imageid}.jpeg").get_response(app)
        assert red_share(crop.body) > 0.01, size


@pytest.mark.parametrize("picture", ["centred subject", "photo"])
def test_the_automatic_focus_does_not_wander_from_a_centred_subject(store, picture):
    data = subject_photo(1000, 700, (0.5, 0.5)) if picture == "centred subject" else (
        f.photo_jpeg(1000, 700, seed=3))
    x, y = store.get_imagedoc(store.save_image(data))["focus_auto"]
    near = 0.03 if picture == "centred subject" else 0.1  # no clear subject: the middle
    assert abs(x - 0.5) < near and abs(y - 0.5) < near, (x, y)


def test_an_explicit_focus_wins_and_auto_focus_can_be_off(config):
    store = ImageStore(config)
    app = ImageMiddleware(prefix="", store=store)
    imageid = store.save_image(subject_photo(1200, 600, (0.12, 0.5)))
    assert red_share(Request.blank(f"/150x150!/{imageid}.jpeg").get_response(app).body) > 0.01
    set_focus(store, imageid, 0.9, 0.5)  # the person's choice wins
    assert red_share(Request.blank(f"/150x150!/{imageid}.jpeg").get_response(app).body) == 0
    off = ImageStore(config.with_changes(auto_focus=False, cache_dir=config.cache_root / "off"))
    other = off.save_image(subject_photo(1200, 600, (0.15, 0.5)))
    assert "focus_auto" not in off.get_imagedoc(other)
    crop = Request.blank(f"/150x150!/{other}.jpeg").get_response(
        ImageMiddleware(prefix="", store=off))
    assert red_share(crop.body) == 0


@BOTH
def test_uploads_carry_a_colour_and_a_placeholder_and_tags_paint_them(any_store, any_config):
    imageid = any_store.save_image(subject_photo(1200, 600, (0.5, 0.5)))
    doc = any_store.get_imagedoc(imageid)
    assert doc["color"] == "#808080"  # the grey around the subject
    assert doc["placeholder"].startswith("data:image/webp;base64,")
    assert len(doc["placeholder"]) < 600
    tag = any_store.scaled_tag(imageid, "240x120", placeholder=True)
    assert "background-color:#808080;" in tag and "background-image:url(data:image/webp" in tag
    assert "background" not in any_store.scaled_tag(imageid, "240x120")
    huimages_wsgi.configure(any_config)
    assert "background-color" in huimages_wsgi.scaled_tag(imageid, "240x120", placeholder=True)
    assert 'placeholder=' not in huimages_wsgi.scaled_tag(imageid, "240x120", placeholder=True)


def test_old_images_get_them_from_the_previews_job(config):
    store = ImageStore(config)
    imageid = store.save_image(subject_photo(2400, 1200, (0.2, 0.5)))
    store.catalog.update(imageid, lambda doc: [doc.pop(key) for key in (
        "color", "placeholder", "focus_auto")])
    env = {"HUIMAGES_DATA_DIR": str(config.data_dir), "PATH": str(BIN)}
    run = subprocess.run([str(BIN / "huimages"), "previews", "--all"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    doc = store.get_imagedoc(imageid)
    assert doc["color"] == "#808080" and doc["placeholder"].startswith("data:image/webp")
    assert abs(doc["focus_auto"][0] - 0.2) < 0.1


def test_the_browse_thumbnails_paint_their_placeholder(tmp_path):
    from .test_browse import HOST, LOCAL
    app = make_app(huimages_wsgi.Config(data_dir=tmp_path / "data", browse=True))
    app.store.save_image(subject_photo(800, 400, (0.5, 0.5)))
    page = Request.blank("/_browse/", environ={**LOCAL, "HTTP_HOST": HOST}).get_response(app)
    assert "background-color:#808080;" in page.text


def test_a_focus_set_on_an_image_older_than_the_follower_still_purges(tmp_path):
    """The follower never saw the image (uploaded before it first ran): a set focus
    purges it all the same, here and in the shared caches."""
    data = tmp_path / "data"
    here = ImageStore(huimages_wsgi.Config(data_dir=data, cache_dir=tmp_path / "cache-a",
                                           auto_focus=False))
    there_config = huimages_wsgi.Config(data_dir=data, cache_dir=tmp_path / "cache-b",
                                        auto_focus=False, purge=("xkey+http://127.0.0.1:9",))
    there = ImageMiddleware(prefix="", store=ImageStore(there_config))
    imageid = here.save_image(subject_photo(800, 400, (0.15, 0.5)))
    assert Request.blank(f"/100x100!/{imageid}.jpeg").get_response(there).status_int == 200
    follower = Follower(there_config, heartbeat=0.2)
    stop = iter([False] * 5 + [True] * 1000)
    follower.follow_once(lambda: next(stop), seconds=1)  # its first run: the image is old
    set_focus(here, imageid, 0.15, 0.5)
    stop = iter([False] * 5 + [True] * 1000)
    follower.follow_once(lambda: next(stop), seconds=1)
    assert not (tmp_path / "cache-b" / "100x100!" / f"{imageid}.jpeg").exists()
    assert follower.shared.pending() == 1  # owed to the shared cache too
    follower.close()
