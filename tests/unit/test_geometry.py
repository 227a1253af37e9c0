import io

from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from huimages_wsgi.core.geometry import crop_box, fit_dimensions, scaled_dimensions
from huimages_wsgi.core.sizes import CROP, FIT, ORIGINAL, Size
from huimages_wsgi.imaging.engine import ImageEngine

dims = st.integers(min_value=1, max_value=20000)


@given(dims, dims, dims, dims)
def test_fit_stays_inside_the_box_and_never_upscales(sw, sh, bw, bh):
    w, h = fit_dimensions(sw, sh, bw, bh)
    assert 1 <= w <= min(sw, bw) and 1 <= h <= min(sh, bh)
    if sw <= bw and sh <= bh:
        assert (w, h) == (sw, sh)
    else:
        assert w == bw or h == bh  # touches the box on the limiting side


@given(dims, dims, dims, dims)
@example(1, 3, 1, 2)  # the width is clamped to 1, which is also the box's width
def test_fit_keeps_the_aspect_ratio_within_rounding(sw, sh, bw, bh):
    w, h = fit_dimensions(sw, sh, bw, bh)
    # the limiting side touches the box; the other is the rounded exact value (or 1).
    # (Which side limits follows from the ratios: a side clamped to 1 can equal the
    # box by accident, e.g. 1x3 into 1x2 is 1x2, limited by the height.)
    if (sw, sh) == (w, h):
        return
    if bw * sh <= bh * sw:
        assert w == bw and (abs(h - sh * bw / sw) <= 0.5 + 1e-9 or h == 1)
    else:
        assert h == bh and (abs(w - sw * bh / sh) <= 0.5 + 1e-9 or w == 1)


@given(dims, dims, dims, dims)
def test_crop_box_is_centred_inside_the_source_with_output_aspect(sw, sh, ow, oh):
    left, top, right, bottom = crop_box(sw, sh, ow, oh)
    assert 0 <= left <= right <= sw + 1e-6 and 0 <= top <= bottom <= sh + 1e-6
    assert abs(left - (sw - right)) < 1e-6 and abs(top - (sh - bottom)) < 1e-6
    assert abs((right - left) * oh - (bottom - top) * ow) < 1e-6 * max(sw, sh) * max(ow, oh)


def test_original_and_crop_dimensions():
    assert scaled_dimensions(640, 480, Size("o", ORIGINAL)) == (640, 480)
    assert scaled_dimensions(640, 480, Size("75x75!", CROP, 75, 75)) == (75, 75)
    assert scaled_dimensions(640, 480, Size("240x160", FIT, 240, 160)) == (213, 160)


small = st.integers(min_value=1, max_value=400)
sizes = st.one_of(
    st.just(Size("o", ORIGINAL)),
    st.builds(lambda w, h: Size(f"{w}x{h}", FIT, w, h), small, small),
    st.builds(lambda w, h: Size(f"{w}x{h}!", CROP, w, h), small, small),
)


@settings(max_examples=60, deadline=None)
@given(small, small, sizes, st.sampled_from([1, 3, 6, 8]))
def test_rendered_dimensions_equal_predicted_dimensions(width, height, size, orientation):
    """The engine and the client use one function: what is predicted is what is served."""
    upright = Image.new("RGB", (width, height), (10, 120, 200))
    stored = upright if orientation < 5 else upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = io.BytesIO()
    stored.save(data, "JPEG", exif=exif.tobytes())
    engine = ImageEngine()
    info = engine.inspect(data.getvalue())
    assert (info.width, info.height) == (width, height)
    if size.kind == ORIGINAL:
        return
    out = io.BytesIO()
    rendered = engine.render(io.BytesIO(data.getvalue()), size, out)
    assert Image.open(out).size == rendered == scaled_dimensions(info.width, info.height, size)
