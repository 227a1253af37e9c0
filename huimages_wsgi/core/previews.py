"""Previews ("mezzanines"): which reduced copies an original gets, and which one a variant uses.

A cold variant of a 12 MP photo costs a decode of the whole original (about
23 ms even at libjpeg's 1/8 DCT scale, 34 ms at 1/2), however small the
output. So every upload also stores a few reduced copies of the original,
made once from the pixels the upload's validation decodes anyway, and a
variant is rendered from the smallest copy that still has enough pixels.

A preview is *normalised*: upright (EXIF orientation applied), sRGB, RGB,
no metadata (no EXIF, GPS or ICC profile). It is the original at a smaller
scale and nothing else, so rendering from it needs no orientation or colour
work, and the output dimensions still come from the original's size through
``geometry.scaled_geometry``: a preview changes how fast a variant is made,
never what ``scaled_dimensions`` predicts.

This module is pure policy (no I/O): the names, the sizes, and the choice.
The engine makes the pixels, the blob store keeps them, the store decides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .geometry import fit_dimensions, scaled_geometry
from .sizes import Size

#: Preview name -> longest side. Powers of two, so libjpeg's 1/2 and 1/4 DCT
#: scaling of a preview lands on common boxes: ``p2048`` decoded at 1/2 *is*
#: a 1024-wide variant, with no resampling left to do. The names are the only
#: ones a blob store accepts (they end up in file names and S3 keys).
PREVIEW_LEVELS: Mapping[str, int] = {"p512": 512, "p2048": 2048}
PREVIEW_NAMES = frozenset(PREVIEW_LEVELS)

#: A level is made only for originals whose longest side is more than this many
#: times the level: a preview barely smaller than the original would cost
#: storage and upload time and save almost nothing when rendering.
MIN_GAIN = 1.5

#: The largest level (``ALIGNED_LEVEL`` or more) is made at the size libjpeg's DCT
#: scaling (1/2, 1/4, 1/8) decodes the original to when that lands between ``DCT_FIT``
#: and ``DCT_OVER`` times the level: a 4032x3024 photo gets a 2016x1512 ``p2048``, a
#: 4608x1976 panorama a 2304x988 one, a 48 MP photo its 1/4 scale. The upload then
#: decodes at that scale and resamples nothing for it. The catalog records every
#: preview's actual size, which is all rendering uses. Smaller levels are resampled from
#: it to their exact size (``p512`` stays 512 pixels long, which the small presets need).
DCT_FIT = 0.9
DCT_OVER = 1.15
ALIGNED_LEVEL = 1024

#: Where no DCT scale lands near the largest level (8 MP: 1/2 is 1632 pixels; 24 MP:
#: 1/4 is 1500), a JPEG original is decoded at the coarsest DCT scale that still has
#: ``SOURCE_MIN`` times the level's pixels along its longest side, and resized to the
#: level: up, from 1632 to 2048 or from 1500 to 2048, instead of a full-size decode and
#: a BICUBIC reduction of 8-24 MP (issue 23: an 8 MP upload took 3.7x a bare decode).
#: This is sound because a JPEG preview is only ever decoded at 1/2, 1/4 or 1/8 (at a
#: DCT scale ``SCALED_GAP`` <= 1 always wins over full scale's ``PREVIEW_GAP`` 2, see
#: ``preview_reduction``): its 1/2 decode needs the detail of half the level, 1024
#: pixels, and the source has at least 0.7 x 2048 = 1434. Measured on the 8 MP bench
#: photo: mid-size fits from the upscaled ``p2048`` 33.23 dB mean against 33.16 from a
#: full decode reduced with BICUBIC (bench/README.md, issue 23).
SOURCE_MIN = 0.7

#: How many times the output size a preview's region must be when the preview
#: is decoded at full scale. A preview has been resampled and JPEG-compressed once
#: already; resampling it again by less than 2x softens the result measurably
#: (3200x2400 photo, q95 output: -1.2 to -2.8 dB against the exact pipeline at
#: ratios 1.02-1.7; -0.02 to -0.8 dB at 2x and more, see tests/unit/test_previews.py).
PREVIEW_GAP = 2.0

#: Decoded at 1/2, 1/4 or 1/8, a preview is a different source: libjpeg's scaled
#: IDCT keeps only the low frequencies of every block, which drops most of the
#: preview's own JPEG noise, so the decoded region needs only to be about the
#: output size: at least ``SCALED_GAP`` times it, i.e. it may be stretched by up
#: to 1/0.94 = 6 %. Measured on a 12 MP photo, q85 output, against the exact
#: pipeline (full decode, LANCZOS): fits of 933-1065 pixels from ``p2048`` at
#: 1/2 lose 0.2 dB against a render from the original, where the fixed 2x rule
#: (a 1/1 decode of the preview and a 2x resample) took three times as long
#: (bench/README.md, "Quality").
SCALED_GAP = 0.94
DCT_SCALES = (8, 4, 2, 1)

#: Floating point slack when a preview region is compared with the output size.
_EPSILON = 1e-6


def check_preview_name(name: str) -> str:
    """Return ``name`` if it is one of the fixed preview names, else raise ValueError.

    Names reach file names and S3 keys; they never come from a request, and
    this check makes sure nothing else ever does either.
    """
    if name not in PREVIEW_NAMES:
        raise ValueError(f"not a preview name: {str(name)[:40]!r}")
    return name


def _aligned_scale(width: int, height: int, level: int) -> int | None:
    """The DCT scale whose size of the original is between ``DCT_FIT`` and ``DCT_OVER``
    times ``level``, if there is one."""
    longest = max(width, height)
    for scale in (2, 4, 8):
        if DCT_FIT * level <= math.ceil(longest / scale) <= DCT_OVER * level:
            return scale
    return None


def _aligned_size(width: int, height: int, level: int) -> tuple[int, int] | None:
    scale = _aligned_scale(width, height, level)
    return None if scale is None else (math.ceil(width / scale), math.ceil(height / scale))


def _levels(width: int, height: int) -> list[tuple[str, int]]:
    """(name, longest side) of the levels an original of this size gets, largest first."""
    longest = max(width, height)
    return sorted(
        ((name, level) for name, level in PREVIEW_LEVELS.items() if longest > MIN_GAIN * level),
        key=lambda item: item[1], reverse=True,
    )


def preview_decode_scale(width: int, height: int) -> int | None:
    """The DCT scale (2, 4 or 8) a JPEG original of this size is decoded at to make its
    previews: the largest level's aligned scale, else the coarsest scale that keeps
    ``SOURCE_MIN`` times a level of ``ALIGNED_LEVEL`` or more along the longest side.
    None: the coarsest scale that still covers the largest preview (no upscaling)."""
    levels = _levels(width, height)
    if not levels or levels[0][1] < ALIGNED_LEVEL:
        return None
    level = levels[0][1]
    aligned = _aligned_scale(width, height, level)
    if aligned is not None:
        return aligned
    longest = max(width, height)
    return next((scale for scale in (8, 4, 2)
                 if math.ceil(longest / scale) >= SOURCE_MIN * level), None)


def planned_previews(width: int, height: int) -> list[tuple[str, int, int]]:
    """(name, width, height) of the previews an upright original gets, largest first."""
    planned = []
    for index, (name, level) in enumerate(_levels(width, height)):
        aligned = _aligned_size(width, height, level) if index == 0 else None
        if level < ALIGNED_LEVEL:
            aligned = None
        planned.append((name, *(aligned or fit_dimensions(width, height, level, level))))
    return planned


def recorded_previews(doc: Mapping[str, Any] | None) -> dict[str, tuple[int, int]]:
    """The well-formed entries of a catalog document's ``previews`` (others ignored)."""
    previews = (doc or {}).get("previews")
    if not isinstance(previews, Mapping):
        return {}
    result = {}
    for name, dims in previews.items():
        if name in PREVIEW_NAMES and isinstance(dims, list | tuple) and len(dims) == 2:
            pw, ph = dims
            if isinstance(pw, int) and isinstance(ph, int) and pw > 0 and ph > 0:
                result[name] = (pw, ph)
    return result


def record_previews(doc: dict[str, Any], kept: Mapping[str, list[int]]) -> None:
    """Merge ``kept`` into the document's ``previews`` (a concurrent writer's entries stay)."""
    if kept:
        recorded = doc.get("previews")
        doc["previews"] = {**(recorded if isinstance(recorded, dict) else {}), **kept}


def _ceil(value: float) -> int:
    return math.ceil(value - _EPSILON)


def preview_reduction(
    region: tuple[float, float], output: tuple[int, int], whole: bool
) -> int | None:
    """The DCT scale (8, 4, 2 or 1, coarsest first) to decode a preview at, or None
    when the preview is too small for ``output``.

    ``region`` is the size, in preview pixels, of what maps onto the output;
    ``whole`` says it is the entire preview (a fit, not a crop), the only case
    where an exact landing on the output size is possible. At a DCT scale the
    decoded region must be at least ``SCALED_GAP`` times the output, at full
    scale ``PREVIEW_GAP`` times. (At scale 1 and ratio 1 it would be the preview
    re-encoded as it is: a second JPEG generation that costs 1-2 dB at high
    quality, so the original serves such a size.)
    """
    (region_w, region_h), (out_w, out_h) = region, output
    for scale in DCT_SCALES:
        width, height = region_w / scale, region_h / scale
        if scale > 1 and whole and _ceil(width) == out_w and _ceil(height) == out_h:
            return scale  # libjpeg decodes exactly the output size: nothing to resample
        gap = SCALED_GAP if scale > 1 else PREVIEW_GAP
        if width + _EPSILON >= gap * out_w and height + _EPSILON >= gap * out_h:
            return scale
    return None


def choose_preview(
    previews: Mapping[str, tuple[int, int]], width: int, height: int, size: Size
) -> tuple[str, int, int] | None:
    """The smallest preview that can render ``size`` as well as the original, or None.

    The region of the preview that maps onto the output must be at least
    ``PREVIEW_GAP`` times the output size in both dimensions, or, decoded at a
    DCT scale, ``SCALED_GAP`` times it (see ``preview_reduction``): enough to
    keep the quality of a render from the original. ``width`` and ``height``
    are the original's upright size, from the catalog. ``o`` always comes from the original.
    """
    if size.is_original or width < 1 or height < 1:
        return None
    geometry = scaled_geometry(width, height, size)
    left, top, right, bottom = geometry.box
    best: tuple[str, int, int] | None = None
    whole = geometry.box == (0.0, 0.0, float(width), float(height))
    for name, (pw, ph) in previews.items():
        region = ((right - left) * pw / width, (bottom - top) * ph / height)
        if preview_reduction(region, (geometry.width, geometry.height), whole) is None:
            continue
        if best is None or pw * ph < best[1] * best[2]:
            best = (name, pw, ph)
    return best
