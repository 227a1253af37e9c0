"""Previews made at upload: quality, exact dimensions, metadata, lifecycle, every backend."""

from __future__ import annotations

import io
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageChops, ImageCms

from huimages_wsgi import Config, ImageStore
from huimages_wsgi.core.geometry import scaled_dimensions, scaled_geometry
from huimages_wsgi.core.previews import (
    choose_preview,
    planned_previews,
    preview_decode_scale,
    preview_reduction,
)
from huimages_wsgi.core.sizes import CROP, FIT, Size, parse_size
from huimages_wsgi.imaging.engine import ImageEngine
from huimages_wsgi.storage import BlobNotFound
from huimages_wsgi.storage.disk import DiskBlobStore
from huimages_wsgi.storage.s3 import S3BlobStore

from .. import imagefactory as f

SERVER_URL = "http://img.example.test/"


def _psnr(a: Image.Image, b: Image.Image) -> float:
    hist = ImageChops.difference(a.convert("RGB"), b.convert("RGB")).histogram()
    mse = sum((i % 256) ** 2 * n for i, n in enumerate(hist)) / (a.width * a.height * 3)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def _open(data: bytes | Path) -> Image.Image:
    img = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    img.load()
    return img


def _disk_store(tmp_path: Path, **options) -> ImageStore:
    return ImageStore(Config(data_dir=tmp_path / "data", server_url=SERVER_URL, **options))


@pytest.fixture(scope="module")
def smooth_big() -> Image.Image:
    """Large enough for both levels (longest side > 1.5 x 2048), detail down to a few pixels."""
    return f.photo(800, 600, seed=5).resize((3200, 2400), Image.Resampling.BICUBIC)


# -- which previews, and which one a variant uses ----------------------------------------
def test_levels_are_made_only_when_meaningfully_smaller():
    assert planned_previews(700, 500) == []
    assert planned_previews(769, 500) == [("p512", 512, 333)]
    assert planned_previews(3072, 2304) == [("p512", 512, 384)]
    # the largest level at a DCT scale of the original when one is near it: no resampling
    assert planned_previews(4000, 3000) == [("p2048", 2000, 1500), ("p512", 512, 384)]
    assert planned_previews(3000, 4000) == [("p2048", 1500, 2000), ("p512", 384, 512)]
    assert planned_previews(4032, 3024) == [("p2048", 2016, 1512), ("p512", 512, 384)]
    assert planned_previews(4031, 3023) == [("p2048", 2016, 1512), ("p512", 512, 384)]
    # no DCT scale near the level: the exact fit, from the nearest scale above it
    assert planned_previews(3264, 2448) == [("p2048", 2048, 1536), ("p512", 512, 384)]
    assert planned_previews(6000, 4000) == [("p2048", 2048, 1365), ("p512", 512, 341)]


def test_the_largest_level_lands_on_a_dct_scale_of_every_camera_it_can():
    """Issue 23's ladder: 12 and 48-50 MP and the 20:9 panorama store a DCT scale of the
    original as it is (up to DCT_OVER above the level), in both orientations."""
    assert planned_previews(4608, 1976)[0] == ("p2048", 2304, 988)  # 1/2, 1.125x the level
    assert planned_previews(1976, 4608)[0] == ("p2048", 988, 2304)
    assert planned_previews(8064, 6048)[0] == ("p2048", 2016, 1512)  # 48 MP at 1/4
    assert planned_previews(6048, 8064)[0] == ("p2048", 1512, 2016)
    assert planned_previews(8160, 6120)[0] == ("p2048", 2040, 1530)  # 50 MP at 1/4
    assert planned_previews(4800, 2000)[0] == ("p2048", 2048, 853)  # 1/2 is 1.17x: fitted


@pytest.mark.parametrize(("size", "scale"), [
    ((4032, 3024), 2), ((4608, 1976), 2), ((8064, 6048), 4), ((6048, 8064), 4),
    ((3264, 2448), 2),  # 8 MP: 1/2 is 1632, 0.8x the level: decoded there, resized up
    ((2448, 3264), 2), ((3200, 2400), 2),
    ((6000, 4000), 4),  # 24 MP: 1/4 is 1500, 0.73x the level: up from there
    ((4000, 6000), 4),
    ((10000, 7500), 4),  # 1/8 (1250) is below SOURCE_MIN: down from 1/4 (2500)
    ((12000, 9000), 8),
    ((3072, 2304), None), ((700, 500), None),  # p512 only, or none: the covering scale
])
def test_the_upload_decodes_at_the_dct_scale_the_largest_level_needs(size, scale):
    assert preview_decode_scale(*size) == scale


@pytest.mark.parametrize(("original", "size", "expected"), [
    # the bench's grids (fit 1000-1099x700-799, fit 230-259x150-179, crop 90-119!) at
    # their corners, on every camera of bench/ladder.py
    ((3264, 2448), "1099x799", "p2048"), ((3264, 2448), "1000x700", "p2048"),
    ((3264, 2448), "259x179", "p512"), ((3264, 2448), "119x119!", "p512"),
    ((2448, 3264), "1099x799", "p2048"), ((2448, 3264), "230x150", "p512"),
    ((4032, 3024), "1099x799", "p2048"), ((3024, 4032), "259x179", "p512"),
    ((6000, 4000), "1089x799", "p2048"),
    ((6000, 4000), "1099x799", None),  # 1099x733: 6 % over p2048's 1024 at 1/2
    ((4000, 6000), "1099x799", "p2048"), ((6000, 4000), "90x119!", "p512"),
    ((8064, 6048), "1099x799", "p2048"), ((6048, 8064), "259x179", "p512"),
    ((4608, 1976), "1099x799", "p2048"),  # 1099x471 from 2304x988 at 1/2
    ((4608, 1976), "259x179", "p512"), ((1976, 4608), "1000x700", "p2048"),
    ((4608, 1976), "119x90!", "p512"), ((4608, 1976), "90x119!", "p2048"),  # p512 at 1/4
])
def test_every_camera_serves_the_bench_grids_from_its_previews(original, size, expected):
    previews = {name: (w, h) for name, w, h in planned_previews(*original)}
    chosen = choose_preview(previews, *original, parse_size(size))
    assert (chosen[0] if chosen else None) == expected


@pytest.mark.parametrize(("recorded", "size", "expected"), [
    # what older versions recorded for the panorama (2048 wide) and 8 MP (2048, made in
    # full): the choice is made among the recorded sizes, never the planned ones
    ({"p2048": (2048, 878), "p512": (512, 220)}, "1000x700", "p2048"),
    ({"p2048": (2048, 878), "p512": (512, 220)}, "1099x799", None),  # 1024 < 0.94 x 1099
    ({"p512": (512, 220)}, "1000x700", None),  # previews made before p2048 existed
    ({"p512": (512, 220)}, "240x160", "p512"),
    ({}, "240x160", None),
])
def test_old_images_choose_among_the_previews_they_recorded(recorded, size, expected):
    chosen = choose_preview(recorded, 4608, 1976, parse_size(size))
    assert (chosen[0] if chosen else None) == expected


@settings(max_examples=300, deadline=None)
@given(st.floats(1, 5000), st.floats(1, 5000), st.integers(1, 3000), st.integers(1, 3000),
       st.booleans())
def test_a_jpeg_preview_is_never_decoded_at_full_scale(region_w, region_h, out_w, out_h,
                                                       whole):
    """What makes a level resized up from a DCT scale of the original sound
    (previews.SOURCE_MIN): only its 1/2, 1/4 and 1/8 decodes are ever shown."""
    assert preview_reduction((region_w, region_h), (out_w, out_h), whole) != 1


@pytest.mark.parametrize(("size", "expected"), [
    ("240x160", "p512"),
    ("75x75!", "p512"),
    ("256x192", "p512"),  # the preview is exactly twice the output
    ("257x193", "p512"),  # p512 at 1/2 is 256x192: within SCALED_GAP of the output
    ("273x205", "p2048"),  # p512 at 1/2 stretched by more than 1/SCALED_GAP: p2048 at 1/4
    ("480x320", "p2048"),
    ("1000x750", "p2048"),  # 2.048x the output: resampled from the whole preview
    ("1024x768", "p2048"),  # p2048 at the 1/2 DCT scale *is* the output: no resampling
    ("1000x300!", "p2048"),  # the crop's region of p512 is only 153 pixels tall
    ("1025x769", "p2048"),  # p2048 at 1/2 (1024x768), stretched by 0.1 %
    ("1095x821", None),  # p2048 at 1/2 stretched by more than 1/SCALED_GAP: the original
    ("2048x1536", None),  # the preview itself, re-encoded: a second JPEG generation
    ("o", None),
])
def test_the_smallest_preview_with_enough_pixels_is_chosen(size, expected):
    previews = {"p512": (512, 384), "p2048": (2048, 1536)}
    chosen = choose_preview(previews, 4000, 3000, parse_size(size))
    assert (chosen[0] if chosen else None) == expected


def test_names_are_a_fixed_set_never_a_path(tmp_path):
    blobs = DiskBlobStore(tmp_path)
    imageid = "A" * 32 + "01"
    for name in ("../x", "p512/../../etc", "o", "p1024", ""):
        with pytest.raises(ValueError, match="not a preview name"):
            blobs.put_derived(imageid, name, b"x")
        with pytest.raises(ValueError, match="not a preview name"):
            blobs.open_derived(imageid, name)


# -- quality: renders through previews against the exact full-size pipeline --------------
def _exact(upright_srgb: Image.Image, size: str) -> Image.Image:
    geometry = scaled_geometry(*upright_srgb.size, parse_size(size))
    return upright_srgb.resize(
        (geometry.width, geometry.height), Image.Resampling.LANCZOS, box=geometry.box
    )


QUALITY_SIZES = [
    "240x160", "75x75!", "480x320", "1024x768", "1000x300!",  # the engine test's sizes
    "800x600", "477x800", "179x600",  # the largest presets a preview serves (xvga is 1024x768)
    "256x192", "1000x600!", "512x384",  # previews at exactly 2x, cropped 2x, DCT-scaled 2x
    "300x225", "1200x900", "1600x1200", "2048x1536",  # 1-2x a preview: the original serves
]


def _check_through_previews(tmp_path: Path, data: bytes, reference: Image.Image, sizes):
    """Every size must be within 1 dB of the exact pipeline (full decode, LANCZOS, same
    JPEG quality), whatever source the store picks. While a preview is chosen the original
    is hidden, so the preview really served it."""
    store = _disk_store(tmp_path, jpeg_quality=95, auto_focus=False)  # the colours alone
    imageid = store.save_image(data)
    doc = store.get_imagedoc(imageid)
    assert set(doc["previews"]) == {"p512", "p2048"}
    original = store.blobs.path(imageid)
    hidden = original.with_name("hidden")
    served_by_previews = 0
    for size in sizes:
        exact = _exact(reference, size)
        exact_jpeg = _open(f.encode(exact, quality=95))
        previews = {name: tuple(dims) for name, dims in doc["previews"].items()}
        chosen = choose_preview(previews, doc["width"], doc["height"], parse_size(size))
        if chosen:
            original.rename(hidden)
            served_by_previews += 1
        try:
            ours = _open(store.variant_path(imageid, store.size_for(size)))
        finally:
            if chosen:
                hidden.rename(original)
        assert ours.size == exact.size == store.scaled_dimensions(imageid, size)
        assert _psnr(exact, ours) >= _psnr(exact, exact_jpeg) - 1.0, size
    assert served_by_previews >= min(3, len(sizes))


@pytest.mark.slow  # four 12 MP photos rendered both ways: about 10 s
@pytest.mark.parametrize("orientation", [1, 3, 6, 7])
def test_renders_through_previews_are_as_good_as_an_exact_resize(
    smooth_big, orientation, tmp_path
):
    stored = smooth_big.transpose(f._INVERSE[orientation]) if orientation > 1 else smooth_big
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = f.encode(stored, quality=95, exif=exif.tobytes())
    reference = _open(f.encode(smooth_big, quality=95))
    _check_through_previews(tmp_path, data, reference, QUALITY_SIZES)


def test_cmyk_original_through_previews(smooth_big, tmp_path):
    data = f.encode(smooth_big.convert("CMYK"), quality=95)
    reference = _open(data).convert("RGB")
    _check_through_previews(tmp_path, data, reference, ["240x160", "75x75!", "1024x768"])


def test_ycck_original_through_previews(smooth_big, tmp_path):
    """Adobe YCCK, decoded once at upload into RGB previews that every variant starts from."""
    data = f.ycck_encode(smooth_big.convert("CMYK"))
    reference = _open(data).convert("RGB")
    assert _psnr(smooth_big, reference) > 35  # the fixture decodes to the photo it was made from
    _check_through_previews(tmp_path, data, reference, ["240x160", "75x75!", "1024x768"])


def test_icc_original_through_previews_is_converted_once(smooth_big, tmp_path):
    profile = f.swapped_primaries_profile()
    data = f.encode(smooth_big, quality=95, icc_profile=profile)
    source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    reference = ImageCms.profileToProfile(_open(data), source, ImageCms.createProfile("sRGB"))
    _check_through_previews(tmp_path, data, reference, ["240x160", "75x75!", "1024x768"])


# -- what a preview is ---------------------------------------------------------------------
def test_previews_are_upright_srgb_and_carry_no_metadata(tmp_path):
    upright = f.quadrants(1600, 1000)
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "huimages test camera"
    exif.get_ifd(0x8825)[2] = (52.0, 31.0, 0.0)  # GPSLatitude
    data = f.encode(upright.transpose(f._INVERSE[6]), quality=95, exif=exif.tobytes(),
                    icc_profile=f.swapped_primaries_profile())
    store = _disk_store(tmp_path)
    imageid = store.save_image(data)
    assert store.get_imagedoc(imageid)["previews"] == {"p512": [512, 320]}
    with store.blobs.open_derived(imageid, "p512") as handle:
        raw = handle.read()
    preview = _open(raw)
    assert preview.format == "JPEG" and preview.mode == "RGB" and preview.size == (512, 320)
    assert not preview.getexif() and "icc_profile" not in preview.info and b"Exif" not in raw
    top_left = preview.getpixel((60, 40))
    assert top_left[1] > 200 and top_left[0] < 60  # red through the swapped profile: green


def test_small_originals_get_no_previews(tmp_path):
    store = _disk_store(tmp_path)
    imageid = store.save_image(f.photo_jpeg(760, 500))
    assert "previews" not in store.get_imagedoc(imageid)
    with pytest.raises(BlobNotFound):
        store.blobs.open_derived(imageid, "p512")


# -- predicted == served, through previews ---------------------------------------------
big = st.integers(min_value=769, max_value=1400)
any_side = st.integers(min_value=1, max_value=1400)
boxes = st.integers(min_value=1, max_value=600)
sizes = st.one_of(
    st.builds(lambda w, h: Size(f"{w}x{h}", FIT, w, h), boxes, boxes),
    st.builds(lambda w, h: Size(f"{w}x{h}!", CROP, w, h), boxes, boxes),
)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(big, any_side, st.booleans(), sizes, st.sampled_from([1, 3, 6, 8]))
def test_served_dimensions_equal_predicted_through_previews(
    tmp_path, long_side, other_side, portrait, size, orientation
):
    width, height = (other_side, long_side) if portrait else (long_side, other_side)
    upright = Image.new("RGB", (width, height), (10, 120, 200))
    stored = upright if orientation < 5 else upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = orientation
    store = _disk_store(tmp_path / f"{width}x{height}-{orientation}-{size.name}")
    imageid = store.save_image(f.encode(stored, quality=90, exif=exif.tobytes()))
    doc = store.get_imagedoc(imageid)
    chosen = choose_preview({"p512": tuple(doc["previews"]["p512"])}, width, height, size)
    if chosen:  # hide the original so that only the preview can serve this size
        original = store.blobs.path(imageid)
        original.rename(original.with_name("hidden"))
    with Image.open(store.variant_path(imageid, size)) as served:
        assert served.size == scaled_dimensions(width, height, size)
    assert served.size == store.scaled_dimensions(imageid, size.name)


# -- falling back to the original -------------------------------------------------------
def test_a_broken_or_missing_preview_falls_back_to_the_original(tmp_path, caplog):
    store = _disk_store(tmp_path)
    imageid = store.save_image(f.photo_jpeg(1600, 1200))
    store.blobs.derived_path(imageid, "p512").write_bytes(b"\xff\xd8 not a jpeg")
    with Image.open(store.variant_path(imageid, store.size_for("240x160"))) as image:
        assert image.size == (213, 160)
    assert "not usable" in caplog.text
    store.blobs.derived_path(imageid, "p512").unlink()
    with Image.open(store.variant_path(imageid, store.size_for("75x75!"))) as image:
        assert image.size == (75, 75)
    assert not store.get_imagedoc(imageid).get("broken")  # the original is fine


@pytest.mark.parametrize(("ext", "pillow_format"), [
    ("webp", "WEBP"), ("avif", "AVIF"), ("png", "PNG"), ("jpeg", "JPEG"),
])
def test_every_format_renders_from_previews(tmp_path, ext, pillow_format):
    store = _disk_store(tmp_path)
    imageid = store.save_image(f.photo_jpeg(1600, 1200))
    original = store.blobs.path(imageid)
    original.rename(original.with_name("hidden"))  # only the preview can serve
    with Image.open(store.variant_path(imageid, store.size_for("240x160"), ext)) as image:
        assert (image.format, image.size, image.mode) == (pillow_format, (213, 160), "RGB")


def test_the_original_size_is_always_the_uploaded_bytes(tmp_path):
    store = _disk_store(tmp_path)
    data = f.photo_jpeg(1600, 1200)
    imageid = store.save_image(data)
    assert store.variant_path(imageid, store.size_for("o")).read_bytes() == data


# -- every backend ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def photo_3200() -> bytes:
    return f.photo_jpeg(3200, 2400, seed=4)


def test_previews_are_stored_used_and_deleted_on_every_backend(any_store, photo_3200):
    store = any_store
    imageid = store.save_image(photo_3200)
    assert store.get_imagedoc(imageid)["previews"] == {"p512": [512, 384], "p2048": [2048, 1536]}
    for name in ("p512", "p2048"):
        with store.blobs.open_derived(imageid, name) as handle:
            assert _open(handle.read()).size == tuple(store.get_imagedoc(imageid)["previews"][name])
    with Image.open(store.variant_path(imageid, store.size_for("1024x768"))) as image:
        assert image.size == (1024, 768)
    primary = getattr(store.blobs, "primary", store.blobs)
    if isinstance(primary, S3BlobStore):  # its own private object, typed like the original
        head = primary.client.head_object(Bucket=primary.bucket, Key=f"{imageid}.p512")
        assert head["ContentType"] == "image/jpeg"
    store.delete_image(imageid)
    for name in ("p512", "p2048"):
        with pytest.raises(BlobNotFound):
            store.blobs.open_derived(imageid, name)


def test_legacy_attachments_keep_no_previews_and_render_from_the_original(
    couch_server, tmp_path
):
    from huimages_wsgi.storage.couch import CouchCatalog

    config = Config(data_dir=tmp_path / "data", server_url=SERVER_URL,
                    couch_server=couch_server.url, couch_db="huimages_previews_legacy")
    catalog = CouchCatalog(couch_server.url, config.couch_db)
    store = ImageStore(config, catalog=catalog, blobs=catalog.attachments())
    imageid = store.save_image(f.photo_jpeg(1600, 1200))
    assert "previews" not in store.get_imagedoc(imageid)
    with pytest.raises(BlobNotFound):
        store.blobs.open_derived(imageid, "p512")
    with Image.open(store.variant_path(imageid, store.size_for("240x160"))) as image:
        assert image.size == (213, 160)


# -- backfilling images uploaded before previews -----------------------------------------
def _forget_previews(store: ImageStore, imageid: str) -> None:
    """Make an image look like one uploaded before this feature."""
    for name in ("p512", "p2048"):
        store.blobs.derived_path(imageid, name).unlink(missing_ok=True)
    store.catalog.update(imageid, lambda doc: doc.pop("previews", None))


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "huimages"), "--data-dir", str(data_dir), *args],
        capture_output=True, text=True, timeout=120,
    )


def test_previews_command_backfills_idempotently(tmp_path):
    store = _disk_store(tmp_path)
    old = [store.save_image(f.photo_jpeg(1600, 1200, seed=s)) for s in range(3)]
    small = store.save_image(f.photo_jpeg(300, 200))
    for imageid in old:
        _forget_previews(store, imageid)
    with Image.open(store.variant_path(old[0], store.size_for("240x160"))) as image:
        assert image.size == (213, 160)  # no previews yet: rendered from the original

    one = _cli(store.config.data_dir, "previews", old[0])
    assert one.returncode == 0, one.stderr
    assert one.stdout.startswith("1 made, 0 already there")
    first = _cli(store.config.data_dir, "previews", "--all", "--progress")
    assert first.returncode == 0, first.stderr
    assert "2 made, 1 already there, 1 not needed, 0 not supported, 0 failed" in first.stdout
    assert "previews [" in first.stderr  # the progress bar
    second = _cli(store.config.data_dir, "previews", "--all")
    assert "0 made, 3 already there, 1 not needed" in second.stdout
    for imageid in old:
        assert store.get_imagedoc(imageid)["previews"] == {"p512": [512, 384]}
        assert store.blobs.derived_path(imageid, "p512").is_file()
    assert "previews" not in store.get_imagedoc(small)


def test_previews_command_reports_bad_input(tmp_path):
    neither = _cli(tmp_path, "previews")
    assert neither.returncode != 0 and "--all or image IDs" in neither.stderr
    unknown = _cli(tmp_path, "previews", "A" * 32 + "01")
    assert unknown.returncode == 1 and "0 made" in unknown.stdout and "1 failed" in unknown.stdout
    invalid = _cli(tmp_path, "previews", "../etc")
    assert invalid.returncode == 1 and "1 failed" in invalid.stdout


def test_engine_makes_previews_from_one_decode():
    """The upload's validating decode is the one previews are made from: a corrupt scan
    still fails the upload, and the preview is the requested size."""
    engine = ImageEngine()
    info = engine.inspect(f.photo_jpeg(1600, 1200), previews=True)
    assert [(p.name, p.width, p.height) for p in info.previews] == [("p512", 512, 384)]
    assert engine.inspect(f.photo_jpeg(1600, 1200)).previews == ()
