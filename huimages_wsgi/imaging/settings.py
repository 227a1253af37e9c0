"""The engine's limits and quality settings, one object handed to every step."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image, ImageColor

from ..core.config import (
    DEFAULT_MAX_DECODE_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SCANS,
    check_pixel_limit,
)


@dataclass
class EngineSettings:
    """``draft_gap`` 1.0 lets libjpeg's DCT scaling go as far down as the output
    allows: decode at the smallest 1/2, 1/4 or 1/8 scale that is still at least
    the output size, then ``resample`` (with Pillow's ``reducing_gap``) does the
    rest. bench/README.md has the measurements behind these defaults (speed,
    and PSNR against a full-size decode).

    Previews are made once per upload and every later variant is resampled
    from them, so they get a high JPEG quality and 4:2:0 chroma like the
    variants (whose chroma never needs more than a preview's, as a variant is
    at most half a preview's size). They are made with ``resample`` like any
    variant (LANCZOS would add 60 ms to a 12 MP upload for 0.05 dB); variants
    *from* a preview use ``preview_resample`` (LANCZOS): there BICUBIC costs up
    to 0.5 dB, and the inputs are small enough that LANCZOS adds well under a
    millisecond to a thumbnail (tests/unit/test_previews.py holds the bar).
    """

    quality: int = 85
    max_pixels: int = DEFAULT_MAX_PIXELS
    draft_gap: float = 1.0
    reducing_gap: float | None = 2.0
    resample: Image.Resampling = Image.Resampling.BICUBIC
    preview_quality: int = 92
    preview_resample: Image.Resampling = Image.Resampling.LANCZOS
    #: Transparent pixels become this colour in a JPEG (HUIMAGES_BACKGROUND).
    background: str = "#ffffff"
    background_rgb: tuple[int, int, int] = field(init=False)
    #: Most scans a progressive JPEG may have (HUIMAGES_MAX_SCANS; bounds.py).
    max_scans: int = DEFAULT_MAX_SCANS
    #: Most memory one decode may take, estimated from the header
    #: (HUIMAGES_MAX_DECODE_BYTES; bounds.py).
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES

    def __post_init__(self) -> None:
        check_pixel_limit(self.max_pixels)  # Pillow's own threshold is left as it is
        self.background_rgb = ImageColor.getrgb(self.background)[:3]  # type: ignore[assignment]
