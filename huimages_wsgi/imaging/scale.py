"""Rendering a variant: decode at the smallest DCT scale that serves the output, resize
the region, turn it upright, convert it to sRGB, encode.

A JPEG decodes through libjpeg's DCT scaling (``draft``), so a thumbnail of a
12 MP photo never materialises the full-size bitmap. The source is the
original or one of its previews; either way the output size and region come
from the original's size (``core.geometry.scaled_geometry``), so they are
exactly what ``scaled_dimensions`` predicts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import BinaryIO, NamedTuple

from PIL import Image

from ..core.formats import output_format
from ..core.geometry import Geometry, scaled_geometry
from ..core.previews import preview_reduction
from ..core.sizes import Size
from .bounds import open_bounded
from .decode import decoding, is_jpeg
from .encode import encode
from .pixels import (
    PLAIN_MODES,
    TRANSPOSE,
    Box,
    is_whole,
    normalised,
    orientation,
    resize_banded,
    scale_box,
    stored_box,
    to_srgb,
    upright_size,
)
from .settings import EngineSettings

#: Called with each step's name as it ends, and the image as it stands then.
Phase = Callable[[str, Image.Image], object]
STEPS = ("open", "geometry", "decode", "resize", "transpose", "colour", "encode")


class _Plan(NamedTuple):
    turn: int  # EXIF orientation of the source (1 for a preview: upright already)
    upright: tuple[int, int]  # the source's upright size
    geometry: Geometry  # output size and region, in the original's upright pixels
    region: Box  # that region in the source's upright pixels
    slack: float  # a decode within this many pixels of the output is used as it is
    resample: Image.Resampling
    whole: bool  # the output shows the whole original (no crop)


def render(
    settings: EngineSettings,
    source: BinaryIO,
    size: Size,
    output: BinaryIO,
    fmt: str = "jpeg",
    *,
    original_size: tuple[int, int] | None = None,
    phase: Phase | None = None,
    focus: tuple[float, float] | None = None,
) -> tuple[int, int]:
    """Scale ``source`` to ``size``, write it to ``output`` as ``fmt``; the output's size.
    ``focus``: where a crop is centred (fractions of the upright original).

    With ``original_size`` (the original's upright width and height), the
    source is a preview of that original: upright and sRGB already, so its
    own EXIF and ICC (it has none) are not consulted, and the region is
    mapped onto it by its actual scale in each direction. ``phase`` is the
    hook bench/profile_paths.py and the bench's decode floor time the steps
    (``STEPS``) by.
    """
    encoding = output_format(fmt)  # an unknown format is refused before any decoding
    mark = phase or _ignore
    img = open_bounded(source, settings)  # the header, within every limit (bounds.py)
    mark("open", img)
    plan = _plan(settings, img, size, original_size, focus)
    mark("geometry", img)
    with decoding():
        img = _pixels(settings, img, plan, original_size is not None, mark)
    encode(img, encoding, output, settings.quality, settings.background_rgb)
    mark("encode", img)
    return plan.geometry.width, plan.geometry.height


def _ignore(name: str, img: Image.Image) -> None:
    """The default ``phase`` hook."""


def _plan(settings: EngineSettings, img: Image.Image, size: Size,
          original_size: tuple[int, int] | None,
          focus: tuple[float, float] | None = None) -> _Plan:
    if original_size is None:
        turn = orientation(img)
        upright = upright_size(img, turn)
        geometry = scaled_geometry(*upright, size, focus)
        whole = geometry.box == (0.0, 0.0, *map(float, upright))
        return _Plan(turn, upright, geometry, geometry.box, 0.0, settings.resample, whole)
    geometry = scaled_geometry(*original_size, size, focus)
    region = scale_box(geometry.box, original_size, img.size)
    whole = geometry.box == (0.0, 0.0, *map(float, original_size))
    # a DCT scale landing within a pixel of the output is used as it is
    return _Plan(1, img.size, geometry, region, 1.0, settings.preview_resample, whole)


def _pixels(settings: EngineSettings, img: Image.Image, plan: _Plan, from_preview: bool,
            mark: Phase) -> Image.Image:
    """Decode, resize, turn upright and convert to sRGB: the finished pixels."""
    out_w, out_h = plan.geometry.width, plan.geometry.height
    if from_preview:
        reduction = draft_preview(img, plan.region, out_w, out_h, plan.whole)
    else:
        reduction = draft_original(img, plan.turn, plan.region, out_w, out_h, settings.draft_gap)
    img.load()
    mark("decode", img)
    profile = None if from_preview else img.info.get("icc_profile")
    img = normalised(img)
    # Resample in stored orientation and turn only the small result upright.
    left, top, right, bottom = stored_box(plan.region, plan.turn, *plan.upright)
    box = (left / reduction, top / reduction, right / reduction, bottom / reduction)
    out_size = (out_h, out_w) if plan.turn >= 5 else (out_w, out_h)
    if out_size != img.size or not is_whole(box, img.size, plan.slack):
        img = resize_banded(img, out_size, plan.resample, box, settings.reducing_gap)
    mark("resize", img)
    if plan.turn != 1:
        img = img.transpose(TRANSPOSE[plan.turn])
    mark("transpose", img)
    img = to_srgb(img, profile)
    mark("colour", img)
    return img


def draft_preview(img: Image.Image, region: Box, out_w: int, out_h: int, whole: bool) -> int:
    """Decode a preview at the DCT scale ``previews.preview_reduction`` picks; the reduction."""
    region_size = (region[2] - region[0], region[3] - region[1])
    scale = preview_reduction(region_size, (out_w, out_h), whole) or 1
    if scale > 1 and is_jpeg(img):
        stored_w = img.width
        drafted = img.draft("RGB", (max(1, img.width // scale), max(1, img.height // scale)))
        if drafted is not None:
            return round(stored_w / drafted[1][2])
    return 1


def draft_original(img: Image.Image, turn: int, box: Box, out_w: int, out_h: int,
                   draft_gap: float) -> int:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 when the output is small enough.

    The decode is most of the cost of a variant, and a scaled decode skips
    most of the IDCT, upsampling and colour conversion work. The request
    is the size of the whole image at the resolution the output region
    needs (times ``draft_gap``), rounded up: Pillow then picks the
    smallest scale that still covers it, so we never upscale. Returns the
    reduction (1, 2, 4 or 8); the decoded size is the stored size divided
    by it, rounded up.
    """
    if not is_jpeg(img):
        return 1
    region_w, region_h = box[2] - box[0], box[3] - box[1]
    upright_w, upright_h = upright_size(img, turn)
    need_w = upright_w * out_w / region_w * draft_gap
    need_h = upright_h * out_h / region_h * draft_gap
    if turn >= 5:
        need_w, need_h = need_h, need_w
    request = (max(1, math.ceil(need_w)), max(1, math.ceil(need_h)))
    if request[0] < img.width and request[1] < img.height:
        stored_w = img.width
        drafted = img.draft(img.mode if img.mode in PLAIN_MODES else None, request)
        if drafted is not None:  # (mode, (0, 0, stored_w / scale, stored_h / scale))
            return round(stored_w / drafted[1][2])
    return 1
