"""COPY of huimages_wsgi/engine.py for bench/profile.py experiments (do not import
from the package). Changes against the original: ``resample`` is a constructor
argument (default LANCZOS, as the original).

The image engine: everything that touches pixels, on Pillow.

Two jobs: check an upload (``inspect``) and produce a derivative
(``render``). Rendering decodes through libjpeg's DCT scaling (``draft``),
so a thumbnail of a 12 MP photo never materialises the full-size bitmap;
it applies EXIF orientation, converts any embedded ICC profile to sRGB and
writes a plain sRGB JPEG with no metadata (no EXIF, no GPS).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import BinaryIO

from PIL import Image, ImageCms, UnidentifiedImageError

from huimages_wsgi.errors import ImageTooLarge, InvalidImage
from huimages_wsgi.geometry import scaled_geometry
from huimages_wsgi.jpegscan import check_upload_structure
from huimages_wsgi.sizes import Size

# Pillow's own bomb guard only warns between MAX_IMAGE_PIXELS and twice that.
# We never want to decode such a file half-heartedly: make the warning an error.
warnings.simplefilter("error", Image.DecompressionBombWarning)

ACCEPTED_UPLOAD_FORMATS = {"JPEG": "image/jpeg", "MPO": "image/jpeg"}
OUTPUT_FORMATS = {"jpeg": ("JPEG", "image/jpeg")}
_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError)


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    content_type: str


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(_ORIENTATION_TAG, 1)
    except _DECODE_ERRORS:
        return 1
    return value if value in _TRANSPOSE else 1


def _upright_size(img: Image.Image, orientation: int) -> tuple[int, int]:
    width, height = img.size
    return (height, width) if orientation >= 5 else (width, height)


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
        return ImageCms.buildTransform(source, ImageCms.createProfile("sRGB"), mode, "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return None  # a broken profile is ignored rather than failing the image


def _to_srgb(img: Image.Image, profile: bytes | None) -> Image.Image:
    if profile and img.mode in ("RGB", "CMYK", "L"):
        digest = hashlib.sha1(profile, usedforsecurity=False).hexdigest()
        transform = _srgb_transform(digest, profile, img.mode)
        if transform is not None:
            return ImageCms.applyTransform(img, transform)
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA", "P") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


class ImageEngine:
    """Scaling and validation with one set of limits and quality settings."""

    def __init__(
        self,
        quality: int = 85,
        max_pixels: int = 89_478_485,
        draft_gap: float = 2.0,
        reducing_gap: float | None = 2.0,
        resample: Image.Resampling = Image.Resampling.LANCZOS,
    ) -> None:
        self.resample = resample
        self.quality = quality
        self.max_pixels = max_pixels
        self.draft_gap = draft_gap
        self.reducing_gap = reducing_gap
        # Our own limit is checked first; keep Pillow's guard from firing below it.
        Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, max_pixels)

    def _open(self, source: BinaryIO) -> Image.Image:
        try:
            img = Image.open(source)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(f"image has too many pixels: {exc}") from exc
        except _DECODE_ERRORS as exc:
            raise InvalidImage(f"cannot decode image: {exc}") from exc
        width, height = img.size
        if width < 1 or height < 1:
            raise InvalidImage("image has no pixels")
        if width * height > self.max_pixels:
            raise ImageTooLarge(
                f"image is {width}x{height} = {width * height} pixels; "
                f"the limit is {self.max_pixels}"
            )
        return img

    def inspect(self, data: bytes) -> ImageInfo:
        """Validate an upload completely and return its upright dimensions."""
        structure = check_upload_structure(data)
        img = self._open(io.BytesIO(data))
        if img.format not in ACCEPTED_UPLOAD_FORMATS:
            raise InvalidImage(f"{img.format} is not accepted: only JPEG originals are")
        if img.size != (structure.width, structure.height):
            raise InvalidImage("corrupt JPEG: frame header and decoder disagree on the size")
        orientation = _orientation(img)
        try:
            img.draft(img.mode, (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()  # decodes every scan: truncation and corruption surface here
        except _DECODE_ERRORS as exc:
            raise InvalidImage(f"corrupt image data: {exc}") from exc
        width, height = structure.width, structure.height
        if orientation >= 5:
            width, height = height, width
        return ImageInfo(width, height, ACCEPTED_UPLOAD_FORMATS[img.format])

    def dimensions(self, source: BinaryIO) -> tuple[int, int]:
        """Upright dimensions of any stored original (legacy ones need not be JPEG)."""
        img = self._open(source)
        return _upright_size(img, _orientation(img))

    def render(
        self, source: BinaryIO, size: Size, output: BinaryIO, fmt: str = "jpeg"
    ) -> tuple[int, int]:
        """Scale ``source`` to ``size`` and write the encoded result to ``output``."""
        img = self._open(source)
        orientation = _orientation(img)
        upright_w, upright_h = _upright_size(img, orientation)
        geometry = scaled_geometry(upright_w, upright_h, size)
        try:
            img = self._decode_scaled(
                img, orientation, geometry.box, geometry.width, geometry.height
            )
            profile = img.info.get("icc_profile")
            if orientation != 1:
                img = img.transpose(_TRANSPOSE[orientation])
            scale_x = img.width / upright_w
            scale_y = img.height / upright_h
            left, top, right, bottom = geometry.box
            box = (left * scale_x, top * scale_y, right * scale_x, bottom * scale_y)
            if (geometry.width, geometry.height) != img.size or box != (
                0,
                0,
                img.width,
                img.height,
            ):
                img = img.resize(
                    (geometry.width, geometry.height),
                    self.resample,
                    box=box,
                    reducing_gap=self.reducing_gap,
                )
            img = _to_srgb(img, profile)
            pil_format, _ = OUTPUT_FORMATS[fmt]
            img.save(output, pil_format, quality=self.quality)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(str(exc)) from exc
        except _DECODE_ERRORS as exc:
            raise InvalidImage(f"cannot decode image: {exc}") from exc
        return geometry.width, geometry.height

    def _decode_scaled(
        self,
        img: Image.Image,
        orientation: int,
        box: tuple[float, float, float, float],
        out_w: int,
        out_h: int,
    ) -> Image.Image:
        """Let libjpeg decode at 1/2, 1/4 or 1/8 when the output is small enough."""
        if img.format in ("JPEG", "MPO"):
            region_w, region_h = box[2] - box[0], box[3] - box[1]
            upright_w, upright_h = _upright_size(img, orientation)
            # size of the whole upright image at the resolution the output needs
            need_w = upright_w * out_w / region_w * self.draft_gap
            need_h = upright_h * out_h / region_h * self.draft_gap
            if orientation >= 5:
                need_w, need_h = need_h, need_w
            request = (max(1, int(need_w)), max(1, int(need_h)))
            if request[0] < img.width and request[1] < img.height:
                img.draft(img.mode if img.mode in ("RGB", "L", "CMYK") else None, request)
        img.load()
        return img
