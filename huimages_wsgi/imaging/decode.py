"""Opening an image with the node's limits, and what a failed decode means.

``open_image`` reads the header only and refuses anything over the pixel
limit before a pixel is decoded. ``decoding`` is the one place that turns
Pillow's exceptions into ours: a decompression bomb is ``ImageTooLarge``
(422, a limit of this configuration), anything the decoder chokes on is
``InvalidImage`` (the original is bad).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from ..core.errors import ImageTooLarge, InvalidImage

#: What Pillow raises for data it cannot decode (truncated, corrupt, not an image).
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError)
_BOMBS = (Image.DecompressionBombError, Image.DecompressionBombWarning)


@contextmanager
def decoding(message: str = "cannot decode image",
             instead: InvalidImage | None = None) -> Iterator[None]:
    """Pillow's failures inside the block as ImageTooLarge or InvalidImage(``message``);
    ``instead``, when given, is the InvalidImage raised for a failed decode."""
    try:
        yield
    except _BOMBS as exc:
        raise ImageTooLarge(str(exc)) from exc
    except DECODE_ERRORS as exc:
        if instead is not None:
            raise instead from exc
        raise InvalidImage(f"{message}: {exc}") from exc


def open_image(
    source: BinaryIO, max_pixels: int, formats: Sequence[str] | None = None
) -> Image.Image:
    """Parse the header only, then refuse anything over ``max_pixels``.

    This check is the guard, not Pillow's: between its threshold and twice
    that, Pillow merely emits a DecompressionBombWarning, and the check below
    refuses clearly whatever the process's warning filters do with it. The
    filters are the host's: this function never changes them
    (``warnings.catch_warnings`` is process-wide and not thread-safe). In a
    host whose filters make the warning an error, an image between Pillow's
    threshold and ``max_pixels`` is refused as too large too; the
    ``huimages`` processes silence the warning once at start
    (:func:`silence_bomb_warnings`). Nothing has been
    decoded or allocated at this point.
    """
    try:
        img = Image.open(source, formats=formats)
    except _BOMBS as exc:
        # over twice Pillow's threshold Pillow refuses before we see the size
        raise ImageTooLarge(f"image has too many pixels; the limit is {max_pixels}") from exc
    except DECODE_ERRORS as exc:
        raise InvalidImage(f"cannot decode image: {exc}") from exc
    width, height = img.size
    if width < 1 or height < 1:
        raise InvalidImage("image has no pixels")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    return img


def silence_bomb_warnings() -> None:
    """For a process of our own (the CLI, a server worker), once at start: Pillow's
    DecompressionBombWarning says nothing :func:`open_image` does not refuse clearly."""
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def is_jpeg(img: Image.Image) -> bool:
    """A JPEG (an MPO's first frame included): libjpeg's DCT scaling applies."""
    return img.format in ("JPEG", "MPO")
