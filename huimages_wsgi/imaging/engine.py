"""The image engine: everything that touches pixels, on Pillow, with one set of settings.

Two jobs: check an upload (``inspect``, upload.py) and produce a derivative
(``render``, scale.py). Originals may be JPEG, PNG, WebP, AVIF, HEIC/HEIF or
GIF (originals.py); an animated one renders its first frame. Every format
gets EXIF orientation applied and any embedded ICC profile converted to sRGB
(pixels.py), and is written as plain sRGB pixels with no metadata as JPEG,
WebP, AVIF or PNG (encode.py, core/formats.py). Transparency is kept where
the output format holds it (WebP, AVIF, PNG) and put on the configured
background colour for JPEG.

An upload is decoded once, and the same pixels also make its previews
(core/previews.py): normalised reduced copies that later renders start from
instead of the original.
"""

from __future__ import annotations

from typing import BinaryIO

from ..core.sizes import Size
from . import scale, upload
from .scale import Phase
from .settings import EngineSettings
from .upload import ImageInfo, Preview

__all__ = ["ImageEngine", "ImageInfo", "Phase", "Preview"]


class ImageEngine(EngineSettings):
    """Scaling and validation with one set of limits and quality settings (the fields
    of ``EngineSettings``)."""

    def inspect(self, data: bytes, previews: bool = False,
                admit: upload.Admit | None = None) -> ImageInfo:
        """Validate an upload completely; with ``previews``, make them from the same decode,
        inside ``admit(pixels)`` (the store's render admission) when given."""
        return upload.inspect(self, data, previews, admit)

    def check_stored(self, data: bytes) -> str:
        """Cheap checks of a stored original before it is served as ``o``; its content type."""
        return upload.check_stored(self, data)

    def verify(self, data: bytes) -> None:
        """Decode ``data`` completely: InvalidImage or ImageTooLarge if it does not."""
        upload.verify(self, data)

    def render(
        self,
        source: BinaryIO,
        size: Size,
        output: BinaryIO,
        fmt: str = "jpeg",
        *,
        original_size: tuple[int, int] | None = None,
        phase: Phase | None = None,
        focus: tuple[float, float] | None = None,
    ) -> tuple[int, int]:
        """Scale ``source`` (the original, or a preview of an original of
        ``original_size``) to ``size`` and write it to ``output``; see scale.render."""
        return scale.render(self, source, size, output, fmt,
                            original_size=original_size, phase=phase, focus=focus)
