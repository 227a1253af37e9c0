"""Pixel bookkeeping shared by uploads and renders: EXIF orientation, modes, sRGB.

Every original comes out upright (EXIF orientation applied), as sRGB (an
embedded ICC profile converted, the output carrying none) and as RGB, or RGBA
where it has transparency. The boxes here map a region of the upright image
onto the pixels as stored, or onto a preview of the original.
"""

from __future__ import annotations

import hashlib
import io
import math
from functools import lru_cache

from PIL import Image, ImageCms

from .decode import DECODE_ERRORS

Box = tuple[float, float, float, float]

_ORIENTATION_TAG = 0x0112
TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
#: What a JPEG decodes to: used as they are.
PLAIN_MODES = frozenset({"RGB", "L", "CMYK"})


def has_alpha(img: Image.Image) -> bool:
    return img.mode in _ALPHA_MODES or "transparency" in img.info


def normalised(img: Image.Image) -> Image.Image:
    """RGB, L or CMYK as they are (ICC handles them); anything with alpha as RGBA; the
    rest (palette, 1-bit, 16-bit, float) as RGB, so that resampling never works on
    indices and a 16-bit grey is not clipped to white."""
    if img.mode == "RGBA" or (img.mode in PLAIN_MODES and "transparency" not in img.info):
        return img
    if img.mode.startswith(("I", "F")):
        img = eight_bit(img)
    return img.convert("RGBA" if has_alpha(img) else "RGB")


def eight_bit(img: Image.Image) -> Image.Image:
    """A 16- or 32-bit integer or a float grey (TIFF, PNG) as 8-bit ``L``, as viewers
    show it: a 16-bit mode by its declared depth (a TIFF's BitsPerSample: 12-bit
    scans too); a plain integer or float one by the range its values use (0-255,
    0-65535, 0-1 for floats; from the minimum when that is negative). Infinite
    floats are clipped. At full size: about 9 bytes a pixel while it runs."""
    low = 0.0
    if img.mode.startswith("I;16"):
        bits = _declared_bits(img)
        img, high = img.convert("I"), float((1 << bits) - 1)
    else:
        found_low, found_high = img.getextrema()
        finite = all(math.isfinite(value) for value in (found_low, found_high))
        low = min(float(found_low), 0.0) if finite else 0.0
        high = float(found_high) if finite else 1.0
        if low < 0:  # signed samples: their own range
            pass
        elif img.mode == "F" and high <= 1.0:
            high = 1.0
        elif high <= 255:
            high = 255.0
        elif high <= 65535:
            high = 65535.0
    span = high - low
    scale = 255.0 / span if span > 0 else 1.0
    offset = 0.5 - low * scale  # rounded, not truncated, by the conversion to L
    return img.point(lambda value: value * scale + offset).convert("L")


def _declared_bits(img: Image.Image) -> int:
    """A TIFF's BitsPerSample (12 for many scanners), else the mode's 16."""
    declared = getattr(img, "tag_v2", {}).get(258)
    if isinstance(declared, tuple):
        declared = declared[0] if declared else None
    return int(declared) if isinstance(declared, int) and 1 <= declared <= 16 else 16


def opaque(img: Image.Image) -> bool:
    """An RGBA image whose alpha is 255 everywhere (many PNGs): encoded without alpha."""
    return img.mode != "RGBA" or img.getchannel("A").getextrema() == (255, 255)


def flatten(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """RGBA onto ``background`` (RGB); anything else unchanged."""
    if img.mode != "RGBA":
        return img
    flat = Image.new("RGB", img.size, background)
    flat.paste(img, mask=img.getchannel("A"))
    return flat


def orientation(img: Image.Image) -> int:
    """The EXIF orientation (1-8); 1 when there is none or it cannot be read."""
    try:
        value = img.getexif().get(_ORIENTATION_TAG, 1)
    except DECODE_ERRORS:
        return 1
    return value if value in TRANSPOSE else 1


def upright_size(img: Image.Image, turn: int) -> tuple[int, int]:
    """``img``'s (width, height) once EXIF orientation ``turn`` is applied."""
    width, height = img.size
    return (height, width) if turn >= 5 else (width, height)


@lru_cache(maxsize=32)
def _srgb_transform(
    profile_digest: str, profile: bytes, mode: str
) -> ImageCms.ImageCmsTransform | None:
    """Build (once per profile) a transform from an embedded profile to sRGB."""
    del profile_digest  # part of the cache key only
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        if mode != "CMYK" and "srgb" in ImageCms.getProfileDescription(source).lower():
            return None  # already sRGB: skip the per-pixel work
        out_mode = "RGBA" if mode == "RGBA" else "RGB"
        return ImageCms.buildTransform(source, ImageCms.createProfile("sRGB"), mode, out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError):
        return None  # a broken profile is ignored rather than failing the image


def to_srgb(img: Image.Image, profile: bytes | None) -> Image.Image:
    """sRGB pixels as RGB, or RGBA when the image has an alpha channel."""
    if profile and img.mode in ("RGB", "CMYK", "L", "RGBA"):
        digest = hashlib.sha1(profile, usedforsecurity=False).hexdigest()
        transform = _srgb_transform(digest, profile, img.mode)
        if transform is not None:
            return ImageCms.applyTransform(img, transform)
    if img.mode in ("RGB", "RGBA"):
        return img
    return normalised(img).convert("RGBA" if has_alpha(img) else "RGB")


def stored_box(box: Box, turn: int, upright_w: int, upright_h: int) -> Box:
    """Map a region of the upright image onto the pixels as stored (before EXIF transpose)."""
    left, top, right, bottom = box
    return {
        1: (left, top, right, bottom),
        2: (upright_w - right, top, upright_w - left, bottom),
        3: (upright_w - right, upright_h - bottom, upright_w - left, upright_h - top),
        4: (left, upright_h - bottom, right, upright_h - top),
        5: (top, left, bottom, right),
        6: (top, upright_w - right, bottom, upright_w - left),
        7: (upright_h - bottom, upright_w - right, upright_h - top, upright_w - left),
        8: (upright_h - bottom, left, upright_h - top, right),
    }[turn]


def is_whole(box: Box, size: tuple[int, int], slack: float) -> bool:
    """Whether ``box`` is the whole image, give or take ``slack`` pixels per edge."""
    left, top, right, bottom = box
    width, height = size
    return (abs(left) <= slack and abs(top) <= slack
            and abs(right - width) <= slack and abs(bottom - height) <= slack)


def scale_box(box: Box, original: tuple[int, int], preview: tuple[int, int]) -> Box:
    """Map a region of the original onto a preview of it (multiply first: exact edges)."""
    (ow, oh), (pw, ph) = original, preview
    left, top, right, bottom = box
    return (left * pw / ow, top * ph / oh, right * pw / ow, bottom * ph / oh)


#: A resize whose intermediate (Pillow resamples rows first: output width x source
#: rows, 4 bytes a pixel) would take more than this is done in horizontal bands of the
#: output (``resize_banded``). Issue 23: 3600x2400 from a whole 6000x4000 original
#: held the decoded 96 MB, a 58 MB intermediate and the 35 MB result at once.
BAND_BYTES = 8 << 20


def resize_banded(img: Image.Image, size: tuple[int, int], resample: Image.Resampling,
                  box: Box, reducing_gap: float | None) -> Image.Image:
    """``img.resize(size, resample, box=box, reducing_gap=reducing_gap)`` with at most
    about ``BAND_BYTES`` of intermediate: in horizontal bands of the output, each
    resized from its own part of ``box`` and pasted in place. Each output row is
    computed from its own kernel window of the source, which Pillow reads beyond the
    band's box, so there are no seams; Pillow may run the two passes of a band in the
    other order, which rounds its 8-bit intermediate differently: at most 2 levels,
    68 dB or more on a photo (tests/unit/test_engine.py). Done so only where no
    ``Image.reduce`` comes first (a reduce is a memory saving of its own)."""
    out_w, out_h = size
    left, top, right, bottom = box
    scale = (bottom - top) / out_h
    reduces = reducing_gap is not None and max(
        (right - left) / out_w, scale) >= 2 * reducing_gap
    bands = math.ceil(out_w * (bottom - top) * 4 / BAND_BYTES)
    if reduces or bands < 2 or out_h < 2 * bands:
        return img.resize(size, resample, box=box, reducing_gap=reducing_gap)
    out = Image.new(img.mode, size)
    step = math.ceil(out_h / bands)
    for first in range(0, out_h, step):
        last = min(out_h, first + step)
        part = (left, top + first * scale, right, bottom if last == out_h else top + last * scale)
        out.paste(img.resize((out_w, last - first), resample, box=part), (0, first))
    return out
