import errno
import inspect
import io
import math
import warnings

import pytest
from PIL import Image, ImageChops

from huimages_wsgi.core.config import DEFAULT_MAX_PIXELS, Config
from huimages_wsgi.core.errors import BackendUnavailable, ImageTooLarge, InvalidImage, WriteFailed
from huimages_wsgi.core.geometry import scaled_geometry
from huimages_wsgi.core.sizes import parse_size
from huimages_wsgi.imaging.engine import ImageEngine

from .. import imagefactory as f


def render(data: bytes, size: str, engine: ImageEngine | None = None) -> Image.Image:
    out = io.BytesIO()
    (engine or ImageEngine()).render(io.BytesIO(data), parse_size(size), out)
    out.seek(0)
    img = Image.open(out)
    img.load()
    return img


def close(colour, expected, tolerance=40):
    return all(abs(a - b) <= tolerance for a, b in zip(colour, expected, strict=True))


@pytest.fixture
def resize_calls(monkeypatch) -> list[tuple[tuple[int, int], float | None]]:
    """(size of the image resized, reducing_gap) for every ``Image.resize`` call.

    The size of the image ``render`` resizes is the size it decoded, so this
    observes the DCT scaling (and the resample's reducing_gap) from outside.
    """
    calls = []
    resize = Image.Image.resize
    signature = inspect.signature(resize)

    def spy(self, *args, **kwargs):
        arguments = signature.bind(self, *args, **kwargs).arguments
        calls.append((self.size, arguments.get("reducing_gap")))
        return resize(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    return calls


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("size", ["200x200", "80x80!", "o"])
def test_exif_orientation_is_applied(orientation, size):
    data = f.oriented_jpeg(orientation, 400, 200)
    info = ImageEngine().inspect(data)
    assert (info.width, info.height) == (400, 200)  # upright dimensions are stored
    if size == "o":
        return
    img = render(data, size)
    w, h = img.size
    if size == "200x200":
        assert (w, h) == (200, 100)
    quarter = (w // 8, h // 8, w // 8 + 4, h // 8 + 4)
    assert close(f.mean_colour(img, quarter), f.QUADRANT_COLOURS["tl"])
    right_top = (w - w // 8 - 4, h // 8, w - w // 8, h // 8 + 4)
    assert close(f.mean_colour(img, right_top), f.QUADRANT_COLOURS["tr"])
    left_bottom = (w // 8, h - h // 8 - 4, w // 8 + 4, h - h // 8)
    assert close(f.mean_colour(img, left_bottom), f.QUADRANT_COLOURS["bl"])


def test_cmyk_original_comes_out_as_rgb_red():
    img = render(f.cmyk_jpeg(), "60x60")
    assert img.mode == "RGB" and close(f.mean_colour(img), (255, 0, 0))


def test_ycck_original_comes_out_as_correct_rgb():
    """Adobe YCCK (Photoshop's usual CMYK JPEG): every ink, black included, looks right."""
    data = f.ycck_jpeg(120, 80)
    assert Image.open(io.BytesIO(data)).info["adobe_transform"] == 2
    img = render(data, "60x60")
    assert img.mode == "RGB" and img.size == (60, 40)
    boxes = {"tl": (5, 5, 25, 15), "tr": (35, 5, 55, 15),
             "bl": (5, 25, 25, 35), "br": (35, 25, 55, 35)}
    for name, (_, rgb) in f.CMYK_QUADRANTS.items():
        assert close(f.mean_colour(img, boxes[name]), rgb, 12), name
    # the fixture really is YCC-coded: the same bytes taken for plain CMYK look wrong
    as_cmyk = data.replace(b"Adobe\x00d\x00\x00\x00\x00\x02", b"Adobe\x00d\x00\x00\x00\x00\x00")
    assert not close(f.mean_colour(render(as_cmyk, "60x60"), boxes["tl"]), (255, 0, 0))


def test_grayscale_original_comes_out_as_rgb():
    img = render(f.grayscale_jpeg(level=128), "60x60")
    assert img.mode == "RGB" and close(f.mean_colour(img), (128, 128, 128), 3)


def test_palette_original_comes_out_as_rgb():
    img = render(f.palette_png(), "30x30")
    assert img.mode == "RGB" and close(f.mean_colour(img), (0, 0, 255))


def test_embedded_icc_profile_is_converted_to_srgb():
    """The profile swaps red and green primaries: stored red must be shown green."""
    img = render(f.icc_tagged_red_jpeg(), "40x40")
    assert close(f.mean_colour(img), (0, 255, 0), 60)
    assert "icc_profile" not in img.info  # output is plain sRGB


def test_progressive_original():
    img = render(f.progressive_jpeg(640, 480), "320x320")
    assert img.size == (320, 240) and img.format == "JPEG"


def test_derivatives_carry_no_exif_or_gps():
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0)}  # GPS IFD
    data = f.encode(f.photo(300, 200), quality=90, exif=exif.tobytes())
    assert Image.open(io.BytesIO(data)).getexif()
    img = render(data, "100x100")
    assert not img.getexif() and "exif" not in img.info


def test_quality_is_configurable():
    data = f.photo_jpeg(800, 600)
    low = io.BytesIO()
    high = io.BytesIO()
    ImageEngine(quality=30).render(io.BytesIO(data), parse_size("400x400"), low)
    ImageEngine(quality=95).render(io.BytesIO(data), parse_size("400x400"), high)
    assert len(low.getvalue()) < len(high.getvalue()) * 0.6


@pytest.mark.parametrize(
    "size, out, decoded",
    [
        ("240x160", (233, 160), (438, 300)),  # 1/8: 3500x2400 / 8, rounded up
        ("75x75!", (75, 75), (438, 300)),  # 1/8: the crop needs 2400 / 8 = 300 rows
        ("1024x768", (1024, 702), (1750, 1200)),  # 1/2: 1/4 (875 wide) would be too small
    ],
)
def test_large_photo_is_decoded_with_dct_scaling(photo_8mp, resize_calls, size, out, decoded):
    """A thumbnail never materialises the 8 MP bitmap: ``render`` has libjpeg decode at
    the smallest DCT scale that still covers the output, and resamples only that."""
    assert Image.open(io.BytesIO(photo_8mp)).size == (3500, 2400)
    assert render(photo_8mp, size).size == out
    assert [decoded_size for decoded_size, _ in resize_calls] == [decoded]
    # the phase hook (the bench's decode floor) sees exactly what render decodes
    seen = {}
    ImageEngine().render(io.BytesIO(photo_8mp), parse_size(size), io.BytesIO(),
                         phase=lambda name, img: seen.setdefault(name, img.size))
    assert seen["decode"] == decoded
    assert list(seen) == ["open", "geometry", "decode", "resize", "transpose", "colour", "encode"]


def test_render_resamples_with_the_engines_reducing_gap(photo_8mp, resize_calls):
    """A 75x75 crop of an 8 MP photo is still 4x too big after the 1/8 decode: Pillow's
    reducing_gap halves it with reduce() before the resample, which changes the pixels."""
    gapped = render(photo_8mp, "75x75!", ImageEngine(reducing_gap=1.5))
    assert resize_calls == [((438, 300), 1.5)]
    ungapped = render(photo_8mp, "75x75!", ImageEngine(reducing_gap=None))
    assert resize_calls[1] == ((438, 300), None)
    assert gapped.size == ungapped.size == (75, 75)
    assert gapped.tobytes() != ungapped.tobytes()


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "png"])
def test_a_failing_output_is_a_write_error_not_a_bad_image(fmt):
    """ENOSPC while writing the variant says nothing about the original: not InvalidImage
    (which gets the image marked broken, i.e. deleted) but a 503 to retry."""
    output = io.BufferedWriter(f.FullDisk())
    with pytest.raises(WriteFailed) as caught:
        ImageEngine().render(io.BytesIO(f.photo_jpeg(400, 300)), parse_size("100x100"), output, fmt)
    assert isinstance(caught.value, BackendUnavailable) and caught.value.status == 503
    assert caught.value.__cause__.errno == errno.ENOSPC


def test_inspect_accepts_jpeg_and_reports_upright_size():
    info = ImageEngine().inspect(f.solid_jpeg(64, 48))
    assert (info.width, info.height, info.content_type) == (64, 48, "image/jpeg")


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("tga", f.encode(Image.new("RGB", (4, 4)), "TGA"), "JPEG, PNG, WebP, AVIF, HEIC"),
        ("ppm", f.encode(Image.new("RGB", (4, 4)), "PPM"), "not an image"),
        ("zero bytes", b"", "JPEG"),
        ("text", b"hello world, I am not an image", "JPEG"),
        ("truncated", f.photo_jpeg(400, 300)[:5000], "truncated"),
        ("header only", f.photo_jpeg(400, 300)[:600], "truncated"),
    ],
)
def test_inspect_rejects_bad_uploads_with_a_clear_message(name, data, message):
    with pytest.raises(InvalidImage, match=message):
        ImageEngine().inspect(data)


def test_corrupt_scan_data_is_rejected():
    data = bytearray(f.photo_jpeg(400, 300))
    sos = data.index(b"\xff\xda")
    for i in range(sos + 200, sos + 2200, 7):
        data[i] = 0xFF if data[i + 1] != 0 else data[i]
    with pytest.raises(InvalidImage):
        ImageEngine().inspect(bytes(data))


def test_huge_declared_dimensions_are_rejected_before_decoding():
    data = bytearray(f.solid_jpeg(16, 16))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    with pytest.raises(ImageTooLarge):
        ImageEngine().inspect(bytes(data))


def test_pixel_limit_is_configurable():
    with pytest.raises(ImageTooLarge, match="limit"):
        ImageEngine(max_pixels=1000).inspect(f.solid_jpeg(64, 48))


def test_config_and_engine_share_one_pixel_limit():
    assert Config().max_pixels == ImageEngine().max_pixels == DEFAULT_MAX_PIXELS
    assert Image.MAX_IMAGE_PIXELS >= DEFAULT_MAX_PIXELS  # Pillow never refuses below ours


def test_the_engine_leaves_pillows_threshold_alone():
    """A library sets no process-wide state: a higher limit is checked, never set."""
    before = Image.MAX_IMAGE_PIXELS
    ImageEngine(max_pixels=2 * before)
    assert Image.MAX_IMAGE_PIXELS == before
    for limit in (2 * before + 1, 0):
        with pytest.raises(ValueError, match="max_pixels"):
            ImageEngine(max_pixels=limit)
        with pytest.raises(ValueError, match="max_pixels"):
            Config(max_pixels=limit)


@pytest.mark.parametrize("action", ["ignore", "error"])
def test_pillows_warning_band_is_refused_whatever_the_warning_filters(action):
    """Between its threshold and twice that, Pillow only warns: we refuse, always."""
    width, height = 10_000, 10_000
    assert DEFAULT_MAX_PIXELS < width * height <= 2 * DEFAULT_MAX_PIXELS
    data = f.declared_size_jpeg(width, height)
    engine = ImageEngine()
    with warnings.catch_warnings():
        warnings.simplefilter(action, Image.DecompressionBombWarning)
        with pytest.raises(ImageTooLarge, match="pixels"):
            engine.inspect(data)
        with pytest.raises(ImageTooLarge, match="pixels"):  # a stored original, too
            engine.render(io.BytesIO(data), parse_size("100x100"), io.BytesIO())


def test_opening_leaves_the_warning_filters_alone(monkeypatch):
    """The process's warning filters are the host's, and swapping them is not
    thread-safe: the pixel check refuses without touching them."""
    data = f.declared_size_jpeg(10_000, 10_000)

    def touched(*args, **kwargs):
        raise AssertionError("the warning filters were changed")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for name in ("catch_warnings", "simplefilter", "filterwarnings", "resetwarnings"):
            monkeypatch.setattr(warnings, name, touched)
        with pytest.raises(ImageTooLarge, match="pixels"):
            ImageEngine().inspect(data)
        monkeypatch.undo()


def _psnr(a: Image.Image, b: Image.Image) -> float:
    hist = ImageChops.difference(a.convert("RGB"), b.convert("RGB")).histogram()
    mse = sum((i % 256) ** 2 * n for i, n in enumerate(hist)) / (a.width * a.height * 3)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


@pytest.fixture(scope="module")
def smooth_photo() -> Image.Image:
    """Detail down to a few pixels but no finer, so JPEG loss stays small next to scaling error."""
    return f.photo(800, 600, seed=3).resize((2400, 1800), Image.Resampling.BICUBIC)


@pytest.mark.parametrize("orientation", [1, 3, 6, 7])
@pytest.mark.parametrize("size", ["240x160", "75x75!", "480x320", "1024x768", "1000x300!"])
def test_fast_path_output_is_as_good_as_an_exact_resize(smooth_photo, orientation, size):
    """Guards the speed work: DCT-scaled decode + resample must stay close to the
    exact pipeline (full decode, LANCZOS from the full-size pixels, same JPEG
    quality). Measured margin: 0.2-0.6 dB; decoding too small (draft_gap 0.5),
    NEAREST, or BILINEAR/BOX without Pillow's reducing_gap fall 1.3-5.5 dB short."""
    stored = smooth_photo.transpose(f._INVERSE[orientation]) if orientation > 1 else smooth_photo
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = f.encode(stored, quality=95, exif=exif.tobytes())
    geometry = scaled_geometry(*smooth_photo.size, parse_size(size))
    upright = Image.open(io.BytesIO(f.encode(smooth_photo, quality=95)))
    exact = upright.resize(
        (geometry.width, geometry.height), Image.Resampling.LANCZOS, box=geometry.box
    )
    exact_jpeg = Image.open(io.BytesIO(f.encode(exact, quality=95)))
    ours = render(data, size, ImageEngine(quality=95))
    assert ours.size == exact.size
    assert _psnr(exact, ours) >= _psnr(exact, exact_jpeg) - 1.0


@pytest.mark.parametrize("size", [(3600, 2400), (5000, 3333), (2999, 1999)])
@pytest.mark.parametrize("resample", [Image.Resampling.BICUBIC, Image.Resampling.LANCZOS])
def test_a_large_resize_in_bands_is_the_same_picture(size, resample):
    """Issue 23: 3600x2400 from a whole 6000x4000 original in bands of the output (the
    worker's peak: 237 MB at once, under 200 in bands). No seams, no shift: the bands
    differ from one resize only by the rounding of Pillow's intermediate."""
    from huimages_wsgi.imaging.pixels import BAND_BYTES, resize_banded

    photo = f.photo(1500, 1000, seed=3).resize((6000, 4000), Image.Resampling.BICUBIC)
    assert size[0] * 4000 * 4 > 2 * BAND_BYTES  # really banded
    whole = photo.resize(size, resample, reducing_gap=2.0)
    banded = resize_banded(photo, size, resample, (0, 0, 6000, 4000), 2.0)
    assert banded.size == size
    assert max(high for _, high in ImageChops.difference(whole, banded).getextrema()) <= 2
    assert _psnr(whole, banded) >= 60
