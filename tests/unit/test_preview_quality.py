"""Quality bounds of issue 15's previews: a 12 MP photo's DCT-aligned ``p2048`` and the
renders that stretch a DCT-scaled preview by up to 1/SCALED_GAP, against the exact
pipeline (full decode, LANCZOS). Functional bounds, no timing."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from huimages_wsgi.core.previews import SCALED_GAP, choose_preview
from huimages_wsgi.imaging.engine import ImageEngine

from .. import imagefactory as f
from .test_previews import _check_through_previews, _open, _psnr


@pytest.fixture(scope="module")
def phone_12mp() -> Image.Image:
    """4032x3024 upright, smooth with detail down to a few pixels (like test_previews')."""
    return f.photo(1008, 756, seed=7).resize((4032, 3024), Image.Resampling.BICUBIC)


# every box class issue 15 benches, with boxes that stretch p2048 at 1/2 (1008x756)
MID_SIZES = ["1000x750", "1020x765", "1065x799", "933x700", "1099x700", "1000x740!"]
SMALL_SIZES = ["240x160", "257x193", "231x178", "100x100!", "119x90!"]


@pytest.mark.slow  # 12 MP photos rendered both ways: about 4 s
@pytest.mark.parametrize("orientation", [1, 3])
def test_dct_aligned_previews_render_as_well_as_an_exact_resize(
    phone_12mp, orientation, tmp_path
):
    """Mid-size fits and crops stretched from p2048 at 1/2, small ones from p512 (at 1/2
    too, e.g. 257x193): within 1 dB of the exact pipeline at q95, like every other size."""
    stored = phone_12mp.transpose(f._INVERSE[orientation]) if orientation > 1 else phone_12mp
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = f.encode(stored, quality=95, exif=exif.tobytes())
    reference = _open(f.encode(phone_12mp, quality=95))
    _check_through_previews(tmp_path, data, reference, MID_SIZES + SMALL_SIZES)


def test_mid_sizes_come_from_p2048_at_half_scale():
    previews = {"p2048": (2016, 1512), "p512": (512, 384)}
    from huimages_wsgi.core.sizes import parse_size

    for size in MID_SIZES:
        assert choose_preview(previews, 4032, 3024, parse_size(size))[0] == "p2048", size
    # more than 1/SCALED_GAP wider than 1008: the original
    too_wide = int(1008 / SCALED_GAP) + 2
    assert choose_preview(previews, 4032, 3024, parse_size(f"{too_wide}x2000")) is None


def test_upload_previews_are_close_to_an_exact_resize(phone_12mp):
    """p2048 is the 1/2 DCT decode (no resample), p512 is resampled from it: each within
    0.5 dB of the way before issue 15 (full decode, BICUBIC straight to the preview's
    size, same JPEG quality), against a LANCZOS resize of the full decode."""
    data = f.encode(phone_12mp, quality=95)
    engine = ImageEngine()
    info = engine.inspect(data, previews=True)
    full = _open(data)
    sizes = {p.name: (p.width, p.height) for p in info.previews}
    assert sizes == {"p2048": (2016, 1512), "p512": (512, 384)}
    for preview in info.previews:
        size = (preview.width, preview.height)
        exact = full.resize(size, Image.Resampling.LANCZOS)
        before = full.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
        before_jpeg = _open(f.encode(before, quality=engine.preview_quality,
                                     subsampling="4:2:0"))
        assert _psnr(exact, _open(preview.data)) >= _psnr(exact, before_jpeg) - 0.5, preview.name


@pytest.mark.slow  # an 8 MP photo: about 2 s
def test_a_level_resized_up_from_half_scale_shows_what_a_full_decode_would():
    """Issue 23: an 8 MP original's p2048 is its 1/2 DCT decode (1632 pixels) resized up
    with LANCZOS, not a full decode reduced with BICUBIC (3.7x a bare decode at upload).
    What renders see of it, its 1/2 decode, must be as close to the exact pipeline as
    the 1/2 decode of a p2048 made the old way (within 0.25 dB; it is above on the bench
    photo)."""
    photo = f.photo(816, 612, seed=9).resize((3264, 2448), Image.Resampling.BICUBIC)
    data = f.encode(photo, quality=95)
    engine = ImageEngine()
    info = engine.inspect(data, previews=True)
    made = {p.name: p for p in info.previews}["p2048"]
    assert (made.width, made.height) == (2048, 1536)
    full = _open(data)
    exact = full.resize((1024, 768), Image.Resampling.LANCZOS)
    before = full.resize((2048, 1536), Image.Resampling.BICUBIC, reducing_gap=2.0)
    old_way = f.encode(before, quality=engine.preview_quality, subsampling="4:2:0")

    def half(data: bytes) -> Image.Image:
        img = Image.open(io.BytesIO(data))
        img.draft("RGB", (img.width // 2, img.height // 2))
        img.load()
        assert img.size == (1024, 768)
        return img

    assert _psnr(exact, half(made.data)) >= _psnr(exact, half(old_way)) - 0.25
