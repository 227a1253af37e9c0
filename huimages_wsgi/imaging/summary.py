"""What a small copy of an image says about it: its dominant colour, a tiny placeholder
to paint before it arrives, and where its subject is.

Usage (the store, from the smallest preview of an upload, or of an old image)::

    summary = summarize(Image.open(io.BytesIO(preview_bytes)))
    summary.colour        # "#7a5c3e": the most common colour, for a background
    summary.placeholder   # "data:image/webp;base64,...": 16 px wide, blurred when shown
    summary.focus         # (0.31, 0.42): the centre of what stands out, for crops

The focus is a cheap saliency estimate in the spirit of libvips'
``attention`` strategy: on a 64-pixel-wide copy reduced to a few colours,
each pixel weighs by how rare its colour is in the image (a red bell on a
table, a face against the sky) and, less, by how much it differs from its
blurred surroundings (edges, texture); the focus is the weighted centre of
the pixels that stand out most (the top twentieth), drawn a little towards
the middle, so a photo with no clear subject, or a centred one, keeps its
crops in the middle.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

from PIL import Image, ImageChops, ImageFilter, ImageOps

WORK_WIDTH = 64  # the saliency's copy
PLACEHOLDER_WIDTH = 16
#: Of the pixels by salience, the share that count for the focus.
TOP_SHARE = 0.05
#: The weight of local contrast against that of a rare colour.
CONTRAST_WEIGHT = 0.25
#: How far the focus is drawn back to the middle (0: not at all).
CENTRE_PULL = 0.15
#: The most pixels decoded for a summary (a preview has far fewer; an original without
#: previews is small, or a JPEG decoded reduced).
MOST_PIXELS = 4_000_000


@dataclass(frozen=True)
class Summary:
    colour: str
    placeholder: str
    focus: tuple[float, float]


def summarize(img: Image.Image) -> Summary:
    """The colour, placeholder and focus of ``img`` (an upright sRGB copy, any size)."""
    rgb = img.convert("RGB")
    rgb.thumbnail((WORK_WIDTH, WORK_WIDTH * 4))
    return Summary(dominant_colour(rgb), placeholder(rgb), salient_point(rgb))


def dominant_colour(img: Image.Image) -> str:
    """``#rrggbb`` of the most common of a few representative colours."""
    quantized = img.quantize(colors=6, method=Image.Quantize.MEDIANCUT)
    palette = quantized.getpalette() or [0, 0, 0]
    count, index = max(quantized.getcolors() or [(1, 0)])
    del count
    red, green, blue = palette[3 * index: 3 * index + 3]
    return f"#{red:02x}{green:02x}{blue:02x}"


def placeholder(img: Image.Image) -> str:
    """A ``data:`` URI of a copy ``PLACEHOLDER_WIDTH`` wide (a few hundred bytes)."""
    small = img.copy()
    small.thumbnail((PLACEHOLDER_WIDTH, PLACEHOLDER_WIDTH * 4))
    out = io.BytesIO()
    small.save(out, "WEBP", quality=40)
    return "data:image/webp;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def salient_point(img: Image.Image) -> tuple[float, float]:
    """Where what stands out is, as fractions of the image (see the module's note)."""
    colours = img.quantize(colors=8, method=Image.Quantize.MEDIANCUT).tobytes()
    share = [0] * 256
    for colour in colours:
        share[colour] += 1
    grey = img.convert("L")
    surroundings = grey.filter(ImageFilter.GaussianBlur(max(2, img.width // 8)))
    contrast = ImageChops.difference(grey, surroundings).tobytes()
    count = len(colours)
    weights = [(1 - share[colour] / count) ** 4 * 255 + edge * CONTRAST_WEIGHT
               for colour, edge in zip(colours, contrast, strict=True)]
    width, height = img.size
    cut = sorted(weights, reverse=True)[max(0, int(len(weights) * TOP_SHARE) - 1)]
    total = sx = sy = 0.0
    for index, weight in enumerate(weights):
        if weight >= cut and weight > 0:
            total += weight
            sx += weight * (index % width + 0.5)
            sy += weight * (index // width + 0.5)
    if total == 0:
        return (0.5, 0.5)
    x, y = sx / total / width, sy / total / height
    return (round(x + (0.5 - x) * CENTRE_PULL, 3), round(y + (0.5 - y) * CENTRE_PULL, 3))


def summarize_bytes(data: bytes) -> Summary | None:
    """``summarize`` of an encoded image (a preview, or a small original): decoded
    reduced where the format can (JPEG's DCT scaling), turned upright by its EXIF;
    None for one that would cost more than ``MOST_PIXELS`` to decode, or cannot be."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (WORK_WIDTH * 4, WORK_WIDTH * 4))
            if img.width * img.height > MOST_PIXELS:
                return None
            return summarize(ImageOps.exif_transpose(img))
    except Exception:  # noqa: BLE001 - a summary never fails an upload (no WebP here...)
        return None

