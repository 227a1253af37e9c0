"""WebP, AVIF and PNG variants, and ``scaled_tag``'s ``<picture>`` and ``srcset``.

Every variant is requested over the WSGI interface, decoded with Pillow and
compared with what ``scaled_dimensions`` predicted, on the embedded default
and on real SeaweedFS S3 + pouchdb-server.
"""

import io
import re

import pytest
from PIL import Image, ImageCms
from webob import Request

from huimages_wsgi import Config, ImageMiddleware, ImageStore
from huimages_wsgi.core.errors import InvalidPath, InvalidSize
from huimages_wsgi.core.formats import FORMATS, PNG_MAX_SIDE
from huimages_wsgi.core.geometry import high_density_size
from huimages_wsgi.core.sizes import parse_size

from .. import imagefactory as f

BOTH = pytest.mark.parametrize("backend", ["embedded", "s3+couch"], indirect=True)
EXPECTED = {"jpeg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp"),
            "avif": ("AVIF", "image/avif"), "png": ("PNG", "image/png")}


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def camera_jpeg(width: int, height: int, orientation: int = 1) -> bytes:
    """A photo with everything a camera adds: EXIF with GPS, an orientation, an sRGB profile."""
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"
    exif[0x0112] = orientation
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0)}  # GPS IFD
    stored = f.photo(width, height)
    if orientation == 6:
        stored = stored.transpose(Image.Transpose.ROTATE_90)
    return f.encode(stored, quality=90, exif=exif.tobytes(), icc_profile=srgb_profile())


def get(app, path, **kwargs):
    return Request.blank(path, **kwargs).get_response(app)


def assert_no_metadata(img: Image.Image) -> None:
    assert not img.getexif(), "EXIF (and so GPS) must not reach a variant"
    for key in ("exif", "xmp", "XML:com.adobe.xmp", "icc_profile"):
        assert not img.info.get(key), key


@pytest.fixture
def app(any_store):
    return ImageMiddleware(prefix="", store=any_store)


@BOTH
@pytest.mark.parametrize("ext", sorted(EXPECTED))
@pytest.mark.parametrize("size", ["240x160", "75x75!", "square"])
def test_each_format_decodes_at_the_predicted_size(app, any_store, ext, size):
    imageid = any_store.save_image(camera_jpeg(600, 400, orientation=6), title="Rotated")
    response = get(app, f"/{size}/{imageid}.{ext}")
    assert response.status_int == 200, response.text
    pillow_format, content_type = EXPECTED[ext]
    assert response.content_type == content_type
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    img = Image.open(io.BytesIO(response.body))
    assert img.format == pillow_format
    assert img.size == any_store.scaled_dimensions(imageid, size)  # upright: 400x600 stored 6
    assert img.mode == "RGB"
    assert_no_metadata(img)
    cached = any_store.cache.path(parse_size(size, any_store.config.presets).name, imageid, ext)
    assert cached.read_bytes() == response.body  # its own file, ready for the webserver


@BOTH
@pytest.mark.parametrize("ext", ["webp", "avif", "png"])
def test_last_modified_and_304_per_format(app, any_store, ext):
    imageid = any_store.save_image(f.photo_jpeg(500, 300))
    first = get(app, f"/200x200/{imageid}.{ext}")
    assert first.status_int == 200 and first.last_modified
    jpeg = get(app, f"/200x200/{imageid}.jpeg")
    assert jpeg.body != first.body and jpeg.content_type == "image/jpeg"
    assert jpeg.last_modified == first.last_modified  # the image's, not the render's
    since = first.headers["Last-Modified"]
    again = get(app, f"/200x200/{imageid}.{ext}", headers={"If-Modified-Since": since})
    assert again.status_int == 304 and again.body == b""
    head = get(app, f"/200x200/{imageid}/seo-name.{ext}", method="HEAD")
    assert head.status_int == 200 and head.content_type == EXPECTED[ext][1]
    assert int(head.headers["Content-Length"]) == len(first.body)


def test_unchanged_pixels_still_lose_their_metadata(store):
    """Box bigger than the image, orientation 1, sRGB: the decoded original is saved
    as it is, and AVIF/PNG would copy its EXIF and profile if the engine let them."""
    app = ImageMiddleware(prefix="", store=store)
    imageid = store.save_image(camera_jpeg(300, 200))
    for ext in ("avif", "png", "webp", "jpeg"):
        img = Image.open(io.BytesIO(get(app, f"/1000x1000/{imageid}.{ext}").body))
        assert img.size == (300, 200)
        assert_no_metadata(img)


def test_profiles_are_converted_to_srgb_in_every_format(store):
    app = ImageMiddleware(prefix="", store=store)
    imageid = store.save_image(f.icc_tagged_red_jpeg())
    colours = {
        ext: f.mean_colour(Image.open(io.BytesIO(get(app, f"/40x30/{imageid}.{ext}").body)))
        for ext in FORMATS
    }
    reference = colours["png"]  # lossless: exactly what the engine produced
    assert reference[1] > 200 > reference[0]  # the swapped-primaries "red" is green in sRGB
    for ext, colour in colours.items():
        assert all(abs(a - b) <= 12 for a, b in zip(colour, reference, strict=True)), ext


@BOTH
@pytest.mark.parametrize("ext", ["webp", "avif", "png"])
def test_a_jpeg_original_is_only_a_jpeg(app, any_store, ext):
    imageid = any_store.save_image(f.photo_jpeg(300, 200))
    response = get(app, f"/o/{imageid}.{ext}")
    assert response.status_int == 301  # to the original, as huImages served any o/ URL
    assert response.location.endswith(f"/o/{imageid}.jpeg")
    assert f"served at /o/{imageid}.jpeg" in response.text
    assert f"4096x4096.{ext}" in response.text
    assert not any_store.cache.path("o", imageid, ext).exists()
    with pytest.raises(InvalidPath):
        any_store.scaled_imageurl(imageid, "o", ext)


def test_png_only_for_small_boxes(store):
    app = ImageMiddleware(prefix="", store=store)
    imageid = store.save_image(f.photo_jpeg(1400, 900))
    assert get(app, f"/{PNG_MAX_SIDE}x{PNG_MAX_SIDE}/{imageid}.png").status_int == 200
    too_big = get(app, f"/{PNG_MAX_SIDE + 1}x100/{imageid}.png")
    assert too_big.status_int == 400 and "lossless" in too_big.text
    assert get(app, f"/{PNG_MAX_SIDE + 1}x100/{imageid}.webp").status_int == 200
    with pytest.raises(InvalidSize):
        store.scaled_imagedata(imageid, "2000x2000", "png")


def test_unknown_extensions_and_invalid_input_still_refused(store):
    app = ImageMiddleware(prefix="", store=store)
    imageid = store.save_image(f.photo_jpeg(300, 200))
    for ext in ("gif", "WEBP", "webp2", "png "):
        assert get(app, f"/100x100/{imageid}.{ext}").status_int == 404, ext
    assert get(app, f"/100x100/{imageid}.jpg").status_int == 301  # huImages' (compat tests)
    assert get(app, f"/100x100/{imageid}.avif.webp").status_int == 400  # not an ID
    assert get(app, f"/0x100/{imageid}.webp").status_int == 400
    assert get(app, f"/100x100/{'A' * 34}.avif").status_int in (400, 404)
    assert get(app, f"/100x100/{imageid}.avif", method="POST").status_int == 405


def test_purge_removes_every_format(store):
    app = ImageMiddleware(prefix="", store=store)
    imageid = store.save_image(f.photo_jpeg(300, 200))
    for ext in FORMATS:
        assert get(app, f"/100x100/{imageid}.{ext}").status_int == 200
    assert store.purge(imageid) == len(FORMATS)


def test_scaled_imagedata_and_urls_take_an_extension(store):
    imageid = store.save_image(f.photo_jpeg(300, 200), title="Red Bike")
    data = store.scaled_imagedata(imageid, "square", "webp")
    assert Image.open(io.BytesIO(data)).format == "WEBP"
    assert store.scaled_imageurl(imageid, "square", "avif").endswith(
        f"/75x75!/{imageid}/red-bike.avif"
    )


# -- scaled_tag: <picture> and srcset ------------------------------------------------------

def urls_in(tag: str, attribute: str) -> list[list[str]]:
    """Each ``attribute="..."`` value as a list of its candidates."""
    return [
        [candidate.strip() for candidate in value.split(",")]
        for value in re.findall(rf'{attribute}="([^"]*)"', tag)
    ]


@BOTH
def test_picture_with_sources_and_srcset_matches_the_served_files(app, any_store):
    imageid = any_store.save_image(f.photo_jpeg(1200, 800), title='Bike & "Friends" <3')
    tag = any_store.scaled_tag(
        imageid, "medium", formats=("avif", "webp"), srcset=True, loading="lazy"
    )
    assert tag.startswith('<picture><source type="image/avif" srcset="')
    assert tag.index('type="image/avif"') < tag.index('type="image/webp"') < tag.index("<img ")
    assert tag.endswith("/></picture>")
    assert 'width="480" height="320"' in tag and 'loading="lazy"' in tag
    assert 'alt="Bike &amp; &quot;Friends&quot; &lt;3"' in tag and "<3" not in tag
    sets = urls_in(tag, "srcset")
    assert len(sets) == 3  # avif source, webp source, the img's own
    for candidates, ext in zip(sets, ("avif", "webp", "jpeg"), strict=True):
        one, two = candidates
        assert one.endswith(f"/480x320/{imageid}/bike-friends-3.{ext} 1x")
        assert two.endswith(f"/960x640/{imageid}/bike-friends-3.{ext} 2x")
        for url, density in (one.split(" "), two.split(" ")):
            served = get(app, url.removeprefix("http://img.example.test"))
            assert served.status_int == 200 and served.content_type == EXPECTED[ext][1]
            expected = (480, 320) if density == "1x" else (960, 640)
            assert Image.open(io.BytesIO(served.body)).size == expected
    assert urls_in(tag, " src")[0][0] == sets[2][0].split(" ")[0]


def test_srcset_is_capped_at_the_original(store):
    imageid = store.save_image(f.photo_jpeg(600, 400))
    tag = store.scaled_tag(imageid, "480x320", srcset=True)
    (candidates,) = urls_in(tag, "srcset")
    assert candidates[1].endswith(f"/960x640/{imageid}/image.jpeg 1.25x")  # 600 / 480
    no_gain = store.scaled_tag(imageid, "500x500", srcset=True)  # 2x would give 600/500
    assert "srcset" not in no_gain
    assert "srcset" not in store.scaled_tag(imageid, "800x800", srcset=True)  # already all


def test_srcset_for_crops_is_the_largest_crop_the_source_holds(store):
    imageid = store.save_image(f.photo_jpeg(400, 130))
    tag = store.scaled_tag(imageid, "square", srcset=True)  # 75x75!, region 130x130
    (candidates,) = urls_in(tag, "srcset")
    assert candidates[1].endswith(f"/130x130!/{imageid}/image.jpeg 1.73x")
    assert 'width="75" height="75"' in tag
    big = store.save_image(f.photo_jpeg(400, 300))
    assert f"/150x150!/{big}/image.jpeg 2x" in store.scaled_tag(big, "square", srcset=True)


def test_srcset_respects_the_allowed_sizes(tmp_path):
    store = ImageStore(Config(data_dir=tmp_path, allowed_sizes=frozenset({"medium"})))
    imageid = store.save_image(f.photo_jpeg(1200, 800))
    assert "srcset" not in store.scaled_tag(imageid, "medium", srcset=True)


def test_picture_without_srcset_and_png_limits(store):
    imageid = store.save_image(f.photo_jpeg(1600, 1200))
    tag = store.scaled_tag(imageid, "svga", formats=("png", "webp", "jpeg"), srcset=True)
    png, webp, jpeg = urls_in(tag, "srcset")
    assert len(png) == 1 and png[0].endswith(".png")  # 1x is 800 px; 2x (1600) is no PNG
    assert len(webp) == 2 and len(jpeg) == 2 and "jpeg" not in urls_in(tag, "type")[0]
    plain = store.scaled_tag(imageid, "small", formats=("webp",))
    assert urls_in(plain, "srcset") == [
        [f"http://img.example.test/240x160/{imageid}/image.webp"]]
    with pytest.raises(InvalidPath):
        store.scaled_tag(imageid, "small", formats=("gif",))


def test_plain_scaled_tag_is_huimages_tag(store):
    """No title: the URL and the alt text are named after the file, as in huImages."""
    imageid = store.save_image(f.photo_jpeg(400, 200), filename="Bike 3.JPG")
    assert store.scaled_tag(imageid, "200x200") == (
        f'<img src="http://img.example.test/200x200/{imageid}/bike-3.jpeg" width="200" '
        'height="100" alt="Bike 3.JPG" />'
    )


@pytest.mark.parametrize(
    "src, size, expected",
    [
        ((1200, 800), "480x320", "960x640"),
        ((500, 300), "480x320", None),  # the 1x already shows nearly all of it
        ((4000, 3000), "3000x3000", "4096x4096"),  # capped at the largest allowed box
        ((400, 300), "75x75!", "150x150!"),
        ((400, 100), "75x75!", "100x100!"),  # the crop region is only 100x100: 1.33x
        ((400, 90), "75x75!", None),
        ((100, 100), "o", None),
    ],
)
def test_high_density_size(src, size, expected):
    result = high_density_size(*src, parse_size(size), limit=4096)
    assert (result.name if result else None) == expected
