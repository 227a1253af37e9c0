"""The one place that decides output dimensions.

Both the server (when it scales) and the client (``scaled_dimensions``, which
never touches pixels) call these functions with the stored upright width and
height, so an ``<img width height>`` tag always matches the served file.
Integer arithmetic keeps the result free of float rounding surprises.
"""

from __future__ import annotations

from dataclasses import dataclass

from .sizes import CROP, ORIGINAL, Size


@dataclass(frozen=True)
class Geometry:
    """Output size plus the region of the upright source that fills it."""

    width: int
    height: int
    box: tuple[float, float, float, float]


def _round_div(numerator: int, denominator: int) -> int:
    """Round half up without floats."""
    return (2 * numerator + denominator) // (2 * denominator)


def fit_dimensions(src_w: int, src_h: int, box_w: int, box_h: int) -> tuple[int, int]:
    """Largest size inside the box with the source's aspect ratio, never upscaled."""
    if src_w <= box_w and src_h <= box_h:
        return src_w, src_h
    if box_w * src_h <= box_h * src_w:  # width is the limiting side
        return box_w, max(1, min(box_h, _round_div(src_h * box_w, src_w)))
    return max(1, min(box_w, _round_div(src_w * box_h, src_h))), box_h


def crop_box(
    src_w: int, src_h: int, out_w: int, out_h: int, focus: tuple[float, float] | None = None
) -> tuple[float, float, float, float]:
    """The largest region of the source with the output's aspect ratio, centred on
    ``focus`` (fractions of the upright source, 0-1) as nearly as the edges allow;
    centred on the middle without one."""
    fx, fy = focus if focus is not None else (0.5, 0.5)
    if src_w * out_h > out_w * src_h:  # source is wider: trim left and right
        region_w = src_h * out_w / out_h
        left = _clamp(fx * src_w - region_w / 2, src_w - region_w)
        return (left, 0.0, left + region_w, float(src_h))
    region_h = src_w * out_h / out_w
    top = _clamp(fy * src_h - region_h / 2, src_h - region_h)
    return (0.0, top, float(src_w), top + region_h)


def _clamp(start: float, most: float) -> float:
    return min(max(start, 0.0), most)


def scaled_geometry(
    src_w: int, src_h: int, size: Size, focus: tuple[float, float] | None = None
) -> Geometry:
    """Output dimensions and the source region; ``focus`` places a crop (``WxH!``)."""
    if src_w < 1 or src_h < 1:
        raise ValueError(f"invalid source dimensions {src_w}x{src_h}")
    full = (0.0, 0.0, float(src_w), float(src_h))
    if size.kind == ORIGINAL:
        return Geometry(src_w, src_h, full)
    if size.kind == CROP:
        box = crop_box(src_w, src_h, size.width, size.height, focus)
        return Geometry(size.width, size.height, box)
    width, height = fit_dimensions(src_w, src_h, size.width, size.height)
    return Geometry(width, height, full)


def scaled_dimensions(src_w: int, src_h: int, size: Size) -> tuple[int, int]:
    geometry = scaled_geometry(src_w, src_h, size)
    return geometry.width, geometry.height


def high_density_size(
    src_w: int, src_h: int, size: Size, limit: int, min_gain: float = 1.25
) -> Size | None:
    """The size to offer as a ``2x`` candidate for ``size``, or None if none is worth it.

    The box doubled, capped at what the original can give (a box never
    upscales; a crop is shrunk to the largest crop the source region holds)
    and at ``limit`` pixels per side. None unless it is at least ``min_gain``
    times as wide: a few per cent more pixels are not worth a second file.
    Returned as a plain box, whose name is its spec, so its URL and predicted
    dimensions come from the same rules as any other size.
    """
    if size.kind == ORIGINAL:
        return None
    if size.kind == CROP:
        left, top, right, bottom = crop_box(src_w, src_h, size.width, size.height)
        factor = min(2.0, (right - left) / size.width, (bottom - top) / size.height,
                     limit / size.width, limit / size.height)
        width, height = int(size.width * factor), int(size.height * factor)
        if width < size.width * min_gain or height <= size.height:
            return None
        return Size(f"{width}x{height}!", CROP, width, height)
    width, height = min(2 * size.width, limit), min(2 * size.height, limit)
    bigger = Size(f"{width}x{height}", size.kind, width, height)
    gain = scaled_dimensions(src_w, src_h, bigger)[0] / scaled_dimensions(src_w, src_h, size)[0]
    return bigger if gain >= min_gain else None


#: The DCT scales libjpeg decodes a JPEG at, coarsest first.
DCT_REDUCTIONS = (8, 4, 2, 1)


def decoded_pixels(src_w: int, src_h: int, size: Size, dct_scaled: bool) -> int:
    """Pixels a render of ``size`` decodes from an original of ``src_w`` x ``src_h``.

    A JPEG (``dct_scaled``) decodes at the coarsest DCT scale that still covers
    the output region at full resolution, as ``imaging.scale.draft_original``
    asks libjpeg to; anything else decodes whole. ``o`` is a copy, checked by a
    decode of anything but a JPEG. What a render holds in memory follows this.
    """
    if size.is_original:
        return 0 if dct_scaled else src_w * src_h
    geometry = scaled_geometry(src_w, src_h, size)
    left, top, right, bottom = geometry.box
    need_w = src_w * geometry.width / (right - left)
    need_h = src_h * geometry.height / (bottom - top)
    reduction = next((r for r in DCT_REDUCTIONS if dct_scaled
                      and src_w / r >= need_w and src_h / r >= need_h), 1)
    return -(-src_w // reduction) * -(-src_h // reduction)
