"""Real-world originals: JPEGs with trailers, MPO, Motion Photos, HEIC, PNG/WebP/AVIF
with alpha, animations and a polyglot, on the embedded default and on S3+CouchDB.

Each is uploaded (through ImageStore and through the HTTP API), served back byte
for byte at ``imageurl()`` with its own type and the inert headers, and rendered
in every output format at exactly the size ``scaled_dimensions`` predicts.
"""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from webob import Request

from huimages_wsgi import Config, ImageMiddleware, ImageStore, make_app
from huimages_wsgi.core.errors import InvalidImage
from huimages_wsgi.core.formats import FORMATS

from .. import imagefactory as f
from .. import realfiles as r
from ..backends import read_original

BOTH = pytest.mark.parametrize("backend", ["embedded", "s3+couch"], indirect=True)
CSP = "sandbox; default-src 'none'"

#: name -> (bytes, content type, /o/ extension, trailer kind or None)
ORIGINALS = {
    "mpo": (r.mpo(), "image/jpeg", "jpeg", "mpf"),
    "mpo with padding": (r.mpo(padding=4096), "image/jpeg", "jpeg", "mpf"),
    "motion photo": (r.motion_photo(), "image/jpeg", "jpeg", "video"),
    "samsung": (r.samsung_jpeg(), "image/jpeg", "jpeg", "samsung"),
    "stray byte": (r.stray_byte_jpeg(), "image/jpeg", "jpeg", "unknown"),
    "polyglot": (r.polyglot_jpeg(), "image/jpeg", "jpeg", "unknown"),
    "heic": (r.heic(), "image/heic", "heic", None),
    "png alpha": (r.png_alpha(), "image/png", "png", None),
    "webp alpha": (r.webp_alpha(), "image/webp", "webp", None),
    "avif alpha": (r.avif_alpha(), "image/avif", "avif", None),
    "animated gif": (r.animated_gif(), "image/gif", "gif", None),
    "animated webp": (r.animated_webp(), "image/webp", "webp", None),
    "apng": (r.apng(), "image/png", "png", None),
}
SIZES = ("240x160", "75x75!", "square", "1000x1000")


def get(app, path, **kwargs):
    return Request.blank(path, **kwargs).get_response(app)


def local_path(url: str) -> str:
    return url.split("img.example.test", 1)[-1]


def assert_inert(response, content_type: str) -> None:
    assert response.content_type == content_type
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"] == CSP


@BOTH
@pytest.mark.parametrize("name", sorted(ORIGINALS))
def test_each_original_is_kept_and_served_byte_for_byte_with_its_own_type(any_store, name):
    data, content_type, ext, trailer = ORIGINALS[name]
    app = ImageMiddleware(prefix="", store=any_store)
    imageid = any_store.save_image(data, title=name)
    doc = any_store.get_imagedoc(imageid)
    assert doc["contenttype"] == content_type and doc["length"] == len(data)
    if trailer is None:
        assert "trailer" not in doc
    else:
        assert doc["trailer"]["kind"] == trailer and 0 < doc["trailer"]["bytes"] < len(data)
    assert read_original(any_store, imageid) == data
    url = any_store.imageurl(imageid)
    assert url == f"http://img.example.test/o/{imageid}.{ext}"
    for attempt in ("miss", "hit"):  # generated, then the cache fast path
        response = get(app, local_path(url))
        assert response.status_int == 200, (attempt, response.text)
        assert response.body == data, attempt
        assert_inert(response, content_type)
    assert any_store.cache.path("o", imageid, ext).read_bytes() == data


@BOTH
@pytest.mark.parametrize("name", sorted(ORIGINALS))
def test_every_size_renders_from_every_format_at_the_predicted_dimensions(any_store, name):
    data = ORIGINALS[name][0]
    app = ImageMiddleware(prefix="", store=any_store)
    imageid = any_store.save_image(data)
    for size in SIZES:
        predicted = any_store.scaled_dimensions(imageid, size)
        for ext, fmt in FORMATS.items():
            if ext == "png" and size == "1000x1000":
                continue  # PNG stops at smaller boxes (formats.PNG_MAX_SIDE)
            response = get(app, local_path(any_store.scaled_imageurl(imageid, size, ext)))
            assert response.status_int == 200, (size, ext, response.text)
            assert_inert(response, fmt.content_type)
            img = Image.open(io.BytesIO(response.body))
            assert img.format == fmt.pillow_format
            assert img.size == predicted, (size, ext)


def test_a_jpeg_url_for_a_heic_original_names_the_right_one(store):
    app = ImageMiddleware(prefix="", store=store)
    imageid = store.save_image(r.heic(400, 300))
    for wrong in ("jpeg", "png", "webp", "gif"):
        response = get(app, f"/o/{imageid}.{wrong}")
        assert response.status_int == 301  # huImages served o/ at any extension
        assert response.location.endswith(f"/o/{imageid}.heic")
        assert not store.cache.path("o", imageid, wrong).exists()
    assert get(app, f"/100x100/{imageid}.heic").status_int == 404  # no HEIC variants
    tag = store.scaled_tag(imageid, "o")
    assert f'src="http://img.example.test/o/{imageid}/image.heic"' in tag and 'width="400"' in tag


def test_heic_orientation_and_colour_profile_are_applied():
    """pillow-heif turns the EXIF orientation into the file's rotation; the ICC profile
    (primaries swapped: stored red is sRGB green) is converted as for a JPEG."""
    from huimages_wsgi.core.sizes import parse_size
    from huimages_wsgi.imaging.engine import ImageEngine

    engine = ImageEngine()
    rotated = r.heic(400, 200, orientation=6)
    info = engine.inspect(rotated)
    assert (info.width, info.height) == (400, 200)
    out = io.BytesIO()
    assert engine.render(io.BytesIO(rotated), parse_size("200x200"), out, "png") == (200, 100)
    img = Image.open(out)
    for quadrant, (x, y) in {"tl": (10, 10), "tr": (190, 10), "bl": (10, 90),
                             "br": (190, 90)}.items():
        expected = f.QUADRANT_COLOURS[quadrant]
        pixel = img.getpixel((x, y))
        assert all(abs(a - b) < 40 for a, b in zip(pixel, expected, strict=True)), quadrant
    red = f.encode(Image.new("RGB", (80, 60), (255, 0, 0)), "HEIF", quality=95,
                   icc_profile=f.swapped_primaries_profile())
    out = io.BytesIO()
    engine.render(io.BytesIO(red), parse_size("40x30"), out, "png")
    colour = f.mean_colour(Image.open(out))
    assert colour[1] > 200 > colour[0], colour


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_exif_orientation_of_png_and_webp_is_applied(store, fmt):
    upright = f.quadrants(400, 200)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = f.encode(upright.transpose(Image.Transpose.ROTATE_90), fmt, exif=exif.tobytes())
    imageid = store.save_image(data)
    assert store.scaled_dimensions(imageid, "o") == (400, 200)
    body = store.scaled_imagedata(imageid, "200x200", "png")
    img = Image.open(io.BytesIO(body)).convert("RGB")
    assert img.size == (200, 100)
    for corner, (x, y) in {"tl": (10, 10), "br": (190, 90)}.items():
        pixel, expected = img.getpixel((x, y)), f.QUADRANT_COLOURS[corner]
        assert all(abs(a - b) < 30 for a, b in zip(pixel, expected, strict=True)), corner


def _alpha_at(img: Image.Image, x_fraction: float) -> int:
    return img.getchannel("A").getpixel((int(img.width * x_fraction), img.height // 2))


@BOTH
@pytest.mark.parametrize("name", ["png alpha", "webp alpha", "avif alpha"])
def test_transparency_survives_where_the_format_holds_it(any_store, name):
    app = ImageMiddleware(prefix="", store=any_store)
    imageid = any_store.save_image(ORIGINALS[name][0])
    for ext in ("png", "webp", "avif"):
        img = Image.open(io.BytesIO(get(app, f"/300x300/{imageid}.{ext}").body))
        assert img.mode == "RGBA", ext
        assert _alpha_at(img, 0.1) > 240 and _alpha_at(img, 0.9) < 15, ext
    jpeg = Image.open(io.BytesIO(get(app, f"/300x300/{imageid}.jpeg").body))
    assert jpeg.mode == "RGB"
    assert all(c > 240 for c in jpeg.getpixel((int(jpeg.width * 0.9), jpeg.height // 2)))


def test_jpeg_variants_of_alpha_use_the_configured_background(tmp_path):
    store = ImageStore(Config(data_dir=tmp_path / "d", background="#000080"))
    imageid = store.save_image(r.webp_alpha())
    jpeg = Image.open(io.BytesIO(store.scaled_imagedata(imageid, "200x200", "jpeg")))
    pixel = jpeg.getpixel((190, 75))
    assert pixel[0] < 15 and pixel[1] < 15 and 110 < pixel[2] < 145, pixel
    with pytest.raises(ValueError, match="colour"):
        Config(background="not-a-colour")
    assert Config.from_env({"HUIMAGES_BACKGROUND": "#123456"}).background == "#123456"


@BOTH
def test_previews_of_an_alpha_original_keep_alpha(any_store):
    imageid = any_store.save_image(r.png_alpha(1600, 1200))
    doc = any_store.get_imagedoc(imageid)
    assert set(doc["previews"]) == {"p512"}
    with any_store.blobs.open_derived(imageid, "p512") as handle:
        preview = Image.open(io.BytesIO(handle.read()))
    assert preview.format == "WEBP" and preview.mode == "RGBA" and preview.size == (512, 384)
    assert _alpha_at(preview, 0.9) == 0 and _alpha_at(preview, 0.1) == 255
    # a 200x150 variant comes from that preview, and keeps the alpha
    img = Image.open(io.BytesIO(any_store.scaled_imagedata(imageid, "200x200", "webp")))
    assert img.mode == "RGBA" and img.size == (200, 150) and _alpha_at(img, 0.9) < 15


def test_opaque_previews_stay_jpeg(store):
    imageid = store.save_image(r.heic(1600, 1200))
    with store.blobs.open_derived(imageid, "p512") as handle:
        assert Image.open(io.BytesIO(handle.read())).format == "JPEG"


@pytest.mark.parametrize("name", ["animated gif", "animated webp", "apng"])
def test_animations_render_their_first_frame(store, name):
    imageid = store.save_image(ORIGINALS[name][0])
    for ext in ("jpeg", "png"):
        img = Image.open(io.BytesIO(store.scaled_imagedata(imageid, "100x100", ext)))
        red, green, blue = f.mean_colour(img.convert("RGB"))[:3]
        assert red > 200 and green < 40 and blue < 40, (ext, red, green, blue)


def test_an_apple_style_gain_map_jpeg_keeps_passing(store):
    """A primary image plus a smaller grey gain map as the second MPF frame."""
    primary = f.photo(1200, 900, seed=2)
    gain_map = primary.convert("L").resize((300, 225))
    data = f.encode(primary, "MPO", save_all=True, append_images=[gain_map], quality=90)
    imageid = store.save_image(data)
    doc = store.get_imagedoc(imageid)
    assert (doc["width"], doc["height"]) == (1200, 900)
    assert doc["trailer"]["kind"] == "mpf"


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "not an image"),
        (b"<html>hello</html>", "not an image"),
        (f.tga_image(), "only JPEG, PNG, WebP, AVIF, HEIC/HEIF, GIF, TIFF or BMP originals"),
        (f.photo_jpeg(400, 300)[:3000], "truncated JPEG"),
        (r.heic(200, 100)[:400], "cannot|corrupt|not an image"),
        (r.png_alpha(200, 100)[:600], "corrupt|truncated"),
    ],
)
def test_non_images_and_undecodable_files_are_still_refused(store, data, message):
    with pytest.raises(InvalidImage, match=message):
        store.save_image(data)
    assert list(store.catalog.ids(include_deleted=True)) == []


@BOTH
def test_api_uploads_heic_and_motion_photos(any_config):
    token = "t0ken-0123456789abcdef"
    app = make_app(any_config.with_changes(upload_token=token))
    auth = {"Authorization": f"Bearer {token}"}
    for data, content_type, ext in ((r.heic(800, 600), "image/heic", "heic"),
                                    (r.motion_photo(), "image/jpeg", "jpeg")):
        request = Request.blank("/_api/images", method="POST",
                                headers={**auth, "Content-Type": content_type})
        request.body = data
        response = request.get_response(app)
        assert response.status_int == 201, response.text
        imageid = response.json["id"]
        assert response.json["urls"]["o"].endswith(f"/o/{imageid}.{ext}")
        doc = Request.blank(f"/_api/images/{imageid}", headers=auth).get_response(app).json
        assert doc["contenttype"] == content_type
        served = get(app, local_path(response.json["urls"]["o"]))
        assert served.body == data
        assert_inert(served, content_type)
    assert doc["trailer"] == {"bytes": len(r.tiny_mp4()), "kind": "video"}


def test_the_polyglot_is_served_inert_by_the_app(tmp_path):
    """The JPEG carries an HTML page after its end marker: its bytes are the user's and
    are served as they are, as an image a browser will neither sniff nor run."""
    app = make_app(Config(data_dir=tmp_path / "d"))
    data = r.polyglot_jpeg()
    imageid = app.store.save_image(data)
    for _ in range(2):
        response = get(app, f"/o/{imageid}.jpeg")
        assert response.body == data and r.HTML_PAYLOAD in response.body
        assert_inert(response, "image/jpeg")
    head = get(app, f"/o/{imageid}.jpeg", method="HEAD")
    assert_inert(head, "image/jpeg")


def test_browse_links_the_original_at_its_own_extension(tmp_path):
    app = make_app(Config(data_dir=tmp_path / "d", browse=True))
    imageid = app.store.save_image(r.heic(600, 400))
    page = get(app, f"/_browse/{imageid}", environ={"REMOTE_ADDR": "127.0.0.1"}).text
    assert f"o/{imageid}.heic" in page and f"o/{imageid}.jpeg" not in page


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.integers(1, 400), st.integers(1, 400),
       st.booleans(), st.sampled_from(["HEIF", "PNG", "WEBP", "AVIF", "GIF"]),
       st.sampled_from(["jpeg", "webp", "png", "avif"]), st.sampled_from([1, 6, 8]))
def test_rendered_dimensions_equal_predicted_dimensions_for_every_format(
    width, height, box_w, box_h, crop, pillow_format, ext, orientation
):
    """As tests/test_geometry.py for JPEG: what is predicted is what is served."""
    from huimages_wsgi.core.geometry import scaled_dimensions
    from huimages_wsgi.core.sizes import CROP, FIT, Size
    from huimages_wsgi.imaging.engine import ImageEngine

    upright = Image.new("RGBA", (width, height), (10, 120, 200, 128))
    stored = upright if orientation == 1 else upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = orientation
    options = {} if pillow_format == "GIF" else {"exif": exif.tobytes()}
    if pillow_format in ("HEIF", "AVIF") and min(width, height) < 2:  # encoders want 2+
        stored = stored.resize((max(2, stored.width), max(2, stored.height)))
    data = f.encode(stored, pillow_format, **options)
    engine = ImageEngine()
    info = engine.inspect(data)
    size = (Size(f"{box_w}x{box_h}!", CROP, box_w, box_h) if crop
            else Size(f"{box_w}x{box_h}", FIT, box_w, box_h))
    out = io.BytesIO()
    rendered = engine.render(io.BytesIO(data), size, out, ext)
    assert Image.open(out).size == rendered == scaled_dimensions(info.width, info.height, size)


def test_original_only_extensions_are_404_for_sizes_even_before_the_signature(tmp_path):
    """``.heic``/``.heif``/``.gif`` exist only for ``o``: any size with them is an unknown
    URL (404), not a variant whose missing signature is worth a 403."""
    store = ImageStore(Config(data_dir=tmp_path / "d", secret="s" * 16))
    app = ImageMiddleware(prefix="", store=store)
    imageid = store.save_image(r.heic(300, 200))
    for ext in ("heic", "heif", "gif"):
        response = get(app, f"/240x160/{imageid}.{ext}")
        assert response.status_int == 404 and "unsupported extension" in response.text, ext
