"""Writing finished pixels in the URL's format, with no metadata."""

from __future__ import annotations

from typing import BinaryIO

from PIL import Image

from ..core.errors import WriteFailed
from ..core.formats import OutputFormat, save_options
from .pixels import flatten, opaque


def encode(img: Image.Image, encoding: OutputFormat, output: BinaryIO, quality: int,
           background: tuple[int, int, int]) -> None:
    """Write the finished pixels, outside the decode's error handling on purpose.

    Everything here happens after the source decoded, so an OSError is the
    output's (a full disk, an I/O error) and never evidence of a bad
    original: reported as InvalidImage, it would get a healthy image
    marked broken, i.e. deleted. WriteFailed is a 503, to be retried.
    Transparency is kept where the format holds it and put on ``background``
    for JPEG.
    """
    if encoding.pillow_format == "JPEG" or opaque(img):
        img = flatten(img, background)
    img.info = {}  # AVIF and PNG would carry EXIF/ICC over from the original
    try:
        img.save(output, encoding.pillow_format, **save_options(encoding, quality))
        output.flush()  # a buffered tail (WebP's whole file) fails here, not at close
    except OSError as exc:
        raise WriteFailed(f"cannot write the {encoding.pillow_format} output: {exc}") from exc
