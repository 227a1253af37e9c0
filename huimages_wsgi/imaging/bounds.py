"""What a decode may cost, known from the header before a pixel is decoded.

Two limits besides the pixel limit (decode.py), both checked by ``open_bounded``
on every path that decodes an original or a preview (an upload, a render, the
check of a stored original), and both refusals are ``ImageTooLarge``: a 413
for an upload, a 422 that leaves a stored image alone (store/renderer.py).

* Scans: every scan of a progressive JPEG is another pass over every block
  of the image, so a small file that repeats one scan a thousand times costs
  a thousand decodes' worth of CPU (libjpeg-turbo's ``djpeg -maxscans`` is
  the same guard). They are counted from the markers (jpegscan.py), and a
  JPEG with more than ``max_scans`` (HUIMAGES_MAX_SCANS) is refused.
* Memory: the peak bytes a decode takes, estimated from the format, mode
  and size, must stay within ``max_decode_bytes`` (HUIMAGES_MAX_DECODE_BYTES).
  What a format costs is measured, not the size of its pixels alone
  (bench/README.md, "Decode bounds"): a tiny file can declare a huge canvas,
  and the decoders allocate the canvas, not what the file holds. A GIF's
  first frame is drawn on the whole logical screen (one byte a pixel, then
  our RGB(A) copy of it, then the preview). Every WebP goes through libwebp's
  animation decoder, which keeps two RGBA canvases, from which Pillow copies
  the frame once into a string and once into the image: about 16 bytes a
  pixel, so a 34-byte WebP declaring 9000x9000 pixels took 1.4 GB. A
  progressive JPEG holds libjpeg's coefficients for the whole image (about 3
  bytes a pixel at 4:2:0) at any DCT scale. Only the first frame of an
  animation is ever decoded, so the number of frames costs nothing here.
"""

from __future__ import annotations

from typing import BinaryIO

from PIL import Image

from ..core.errors import ImageTooLarge
from .decode import is_jpeg, open_image
from .jpegscan import JpegCost, jpeg_cost
from .settings import EngineSettings

MB = 1 << 20
#: Peak bytes a pixel of the canvas, decode and our working copies together (the
#: upload's previews included), by Pillow mode; measured at 16 MP (bench/README.md).
MODE_BYTES = {"1": 6, "L": 6, "P": 9, "LA": 9, "PA": 9, "RGB": 9, "YCbCr": 9, "RGBA": 12,
              "RGBX": 12, "CMYK": 12, "I;16": 12, "I;16B": 12, "I;16L": 12, "I": 14, "F": 14}
#: Formats whose decoders take more than the table says: libwebp's animation decoder
#: (two RGBA canvases, and Pillow's two copies of the frame) and libheif/libavif
#: (the YUV planes beside the RGB result).
FORMAT_BYTES = {"WEBP": {"RGB": 17, "RGBA": 21}, "HEIF": {"RGB": 10, "RGBA": 12},
                "AVIF": {"RGB": 10, "RGBA": 12}}
#: A JPEG's output at full scale and its working copies (CMYK's RGB one included).
JPEG_BYTES = {"L": 3, "RGB": 5, "CMYK": 9}
UNKNOWN_MODE_BYTES = 16
#: More for a HEIF of 10 or 12 bits (pillow-heif's documented ``info["bit_depth"]``): its
#: YUV planes at 16 bits before the 8-bit result (measured 8.5 against 8.2 at 8 bits).
DEEP_PLANES_BYTES = 2


def open_bounded(source: BinaryIO, settings: EngineSettings,
                 formats: tuple[str, ...] | None = None) -> Image.Image:
    """``open_image`` (the header and the pixel limit), then the scan and memory limits:
    an image that passes may be decoded."""
    img = open_image(source, settings.max_pixels, formats)
    try:
        check_bounds(img, source, settings)
    except BaseException:
        img.close()
        raise
    return img


def check_bounds(img: Image.Image, source: BinaryIO, settings: EngineSettings) -> int:
    """ImageTooLarge for too many scans or a decode over the memory limit; else the
    estimated peak bytes of the decode."""
    cost = _jpeg_cost(img, source, settings.max_scans) if is_jpeg(img) else None
    if cost is not None and cost.scans > settings.max_scans:
        raise ImageTooLarge(
            f"JPEG has more than {settings.max_scans} scans (each one decodes the whole image"
            " again); the limit is HUIMAGES_MAX_SCANS")
    need = decode_bytes(img, cost)
    if need > settings.max_decode_bytes:
        width, height = img.size
        raise ImageTooLarge(
            f"decoding this {width}x{height} {img.format} ({img.mode}) would take about"
            f" {need // MB} MB of memory; the limit is {settings.max_decode_bytes // MB} MB"
            " (HUIMAGES_MAX_DECODE_BYTES)")
    return need


def decode_bytes(img: Image.Image, cost: JpegCost | None = None) -> int:
    """The peak bytes decoding ``img`` whole (its first frame) takes, from the header:
    for a JPEG its output and libjpeg's coefficient buffer (``cost``), for the rest the
    measured bytes a pixel of its format and mode."""
    width, height = img.size
    pixels = width * height
    if is_jpeg(img):
        # the output at full size and its copies (a DCT-scaled decode takes less)
        per_pixel = JPEG_BYTES.get(img.mode, len(img.getbands()) + 5)
        return pixels * per_pixel + (cost.coefficient_bytes if cost else 0)
    per_pixel = FORMAT_BYTES.get(img.format or "", {}).get(img.mode)
    if per_pixel is None:
        per_pixel = MODE_BYTES.get(img.mode, UNKNOWN_MODE_BYTES)
    depth = img.info.get("bit_depth")  # pillow-heif's: 10 and 12 bits decode to 16-bit planes
    if isinstance(depth, int) and depth > 8:
        per_pixel += DEEP_PLANES_BYTES
    return pixels * per_pixel


def _jpeg_cost(img: Image.Image, source: BinaryIO, most_scans: int) -> JpegCost:
    """Count the scans of the JPEG ``source`` holds, leaving the stream where it was."""
    where = source.tell()
    try:
        source.seek(0)
        return jpeg_cost(source.read(), most_scans)
    finally:
        source.seek(where)
