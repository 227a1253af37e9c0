"""The image engine: everything that touches pixels, on Pillow.

Two jobs: check an upload (``inspect``) and produce a derivative
(``render``). Originals may be JPEG, PNG, WebP, AVIF, HEIC/HEIF or GIF
(originals.py); an animated one renders its first frame. Rendering a JPEG
decodes through libjpeg's DCT scaling (``draft``), so a thumbnail of a 12 MP
photo never materialises the full-size bitmap; every format gets EXIF
orientation applied, any embedded ICC profile converted to sRGB, and is
written as plain sRGB pixels with no metadata (no EXIF, no GPS, no ICC
profile) as JPEG, WebP, AVIF or PNG (see formats.py). Transparency is kept
where the output format holds it (WebP, AVIF, PNG) and put on the
configured background colour for JPEG.

An upload is decoded once, and the same pixels also make its previews
(previews.py): normalised reduced copies that later renders start from
instead of the original.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import BinaryIO

from PIL import Image, ImageCms, ImageColor, UnidentifiedImageError

from ..core.config import DEFAULT_MAX_PIXELS
from ..core.errors import ImageTooLarge, InvalidImage, WriteFailed
from ..core.formats import OutputFormat, output_format, save_options
from ..core.geometry import scaled_geometry
from ..core.previews import planned_previews, preview_reduction
from ..core.sizes import Size
from .jpegscan import JpegStructure, jpeg_trailer, scan_jpeg
from .originals import ACCEPTED_DESCRIPTION, accepted_pillow_formats, content_type_of

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


_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_PLAIN_MODES = frozenset({"RGB", "L", "CMYK"})  # what a JPEG decodes to: used as they are


@dataclass(frozen=True)
class Preview:
    """One normalised reduced copy of an original, no metadata: an upright sRGB
    JPEG, or a lossless WebP with alpha for an original with transparency."""

    name: str
    width: int
    height: int
    data: bytes


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    content_type: str
    previews: tuple[Preview, ...] = ()
    #: What follows a JPEG's primary image (``{"bytes": N, "kind": ...}``), else None.
    trailer: dict | None = None


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in _ALPHA_MODES or "transparency" in img.info


def _normalised(img: Image.Image) -> Image.Image:
    """RGB, L or CMYK as they are (ICC handles them); anything with alpha as RGBA; the
    rest (palette, 1-bit, 16-bit) as RGB, so that resampling never works on indices."""
    if img.mode == "RGBA" or (img.mode in _PLAIN_MODES and "transparency" not in img.info):
        return img
    return img.convert("RGBA" if _has_alpha(img) else "RGB")


def _opaque(img: Image.Image) -> bool:
    """An RGBA image whose alpha is 255 everywhere (many PNGs): encoded without alpha."""
    return img.mode != "RGBA" or img.getchannel("A").getextrema() == (255, 255)


def flatten(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """RGBA onto ``background`` (RGB); anything else unchanged."""
    if img.mode != "RGBA":
        return img
    flat = Image.new("RGB", img.size, background)
    flat.paste(img, mask=img.getchannel("A"))
    return flat


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
        out_mode = "RGBA" if mode == "RGBA" else "RGB"
        return ImageCms.buildTransform(source, ImageCms.createProfile("sRGB"), mode, out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError):
        return None  # a broken profile is ignored rather than failing the image


def _to_srgb(img: Image.Image, profile: bytes | None) -> Image.Image:
    """sRGB pixels as RGB, or RGBA when the image has an alpha channel."""
    if profile and img.mode in ("RGB", "CMYK", "L", "RGBA"):
        digest = hashlib.sha1(profile, usedforsecurity=False).hexdigest()
        transform = _srgb_transform(digest, profile, img.mode)
        if transform is not None:
            return ImageCms.applyTransform(img, transform)
    if img.mode in ("RGB", "RGBA"):
        return img
    return _normalised(img).convert("RGBA" if _has_alpha(img) else "RGB")


def _stored_box(
    box: tuple[float, float, float, float], orientation: int, upright_w: int, upright_h: int
) -> tuple[float, float, float, float]:
    """Map a region of the upright image onto the pixels as stored (before EXIF transpose)."""
    left, top, right, bottom = box
    return {
        1: (left, top, right, bottom),
        2: (upright_w - right, top, upright_w - left, bottom),
        3: (upright_w - right, upright_h - bottom, upright_w - left, upright_h - top),
        4: (left, upright_h - bottom, right, upright_h - top),
        5: (top, left, bottom, right),
        6: (top, upright_w - right, bottom, upright_w - left),
        7: (upright_h - bottom, upright_w - right, upright_h - top, upright_w - left),
        8: (upright_h - bottom, left, upright_h - top, right),
    }[orientation]


def _is_whole(
    box: tuple[float, float, float, float], size: tuple[int, int], slack: float
) -> bool:
    """Whether ``box`` is the whole image, give or take ``slack`` pixels per edge."""
    left, top, right, bottom = box
    width, height = size
    return (abs(left) <= slack and abs(top) <= slack
            and abs(right - width) <= slack and abs(bottom - height) <= slack)


def _scale_box(
    box: tuple[float, float, float, float], original: tuple[int, int], preview: tuple[int, int]
) -> tuple[float, float, float, float]:
    """Map a region of the original onto a preview of it (multiply first: exact edges)."""
    (ow, oh), (pw, ph) = original, preview
    left, top, right, bottom = box
    return (left * pw / ow, top * ph / oh, right * pw / ow, bottom * ph / oh)


def _ignore(name: str) -> None:
    """The default ``phase`` hook of ``ImageEngine.render``."""


class ImageEngine:
    """Scaling and validation with one set of limits and quality settings."""

    def __init__(
        self,
        quality: int = 85,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        draft_gap: float = 1.0,
        reducing_gap: float | None = 2.0,
        resample: Image.Resampling = Image.Resampling.BICUBIC,
        preview_quality: int = 92,
        preview_resample: Image.Resampling = Image.Resampling.LANCZOS,
        background: str = "#ffffff",
    ) -> None:
        """``draft_gap`` 1.0 lets libjpeg's DCT scaling go as far down as the
        output allows: decode at the smallest 1/2, 1/4 or 1/8 scale that is
        still at least the output size, then ``resample`` (with Pillow's
        ``reducing_gap``) does the rest. bench/README.md has the measurements
        behind these defaults (speed, and PSNR against a full-size decode).

        Previews are made once per upload and every later variant is
        resampled from them, so they get a high JPEG quality and 4:2:0
        chroma like the variants (whose chroma never needs more than a
        preview's, as a variant is at most half a preview's size). They are
        made with ``resample`` like any variant (LANCZOS would add 60 ms to
        a 12 MP upload for 0.05 dB); variants *from* a preview use
        ``preview_resample`` (LANCZOS): there BICUBIC costs up to 0.5 dB,
        and the inputs are small enough that LANCZOS adds well under a
        millisecond to a thumbnail (tests/test_previews.py holds the bar)."""
        self.quality = quality
        self.max_pixels = max_pixels
        self.draft_gap = draft_gap
        self.reducing_gap = reducing_gap
        self.resample = resample
        self.preview_quality = preview_quality
        self.preview_resample = preview_resample
        #: Transparent pixels become this colour in a JPEG (HUIMAGES_BACKGROUND).
        self.background: tuple[int, int, int] = ImageColor.getrgb(background)[:3]  # type: ignore[assignment]
        # Pillow's threshold is process-wide: keep it at or above ours, so that it
        # never refuses an original we accept and its warning band (above it, up
        # to twice it) only ever holds images that ``_open`` refuses anyway.
        Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, max_pixels)

    def _open(self, source: BinaryIO, formats: Sequence[str] | None = None) -> Image.Image:
        """Parse the header only, then refuse anything over the pixel limit.

        This check is the guard, not Pillow's: between its threshold and twice
        that, Pillow merely emits a DecompressionBombWarning, which the check
        below turns into a clear refusal of its own; so the warning is ignored
        here (it used to reach a user's terminal before that refusal, with
        Pillow's file and line).  A host application that turned it into an
        error is still answered the same.  ``catch_warnings`` swaps the
        process-wide filters and is not thread-safe: interleaved threads may
        leave this one "ignore DecompressionBombWarning" filter installed,
        which is harmless, as every image it hides is refused here anyway.
        Nothing has been decoded or allocated at this point.
        """
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(source, formats=formats)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            # over twice Pillow's threshold Pillow refuses before we see the size
            raise ImageTooLarge(f"image has too many pixels; the limit is {self.max_pixels}") \
                from exc
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

    def check_stored(self, data: bytes) -> str:
        """Cheap checks before a stored original is served byte for byte as ``o``;
        returns its content type (which decides the ``/o/`` extension).

        Uploads are validated completely; this catches what storage damaged:
        no image at all, an empty or truncated JPEG, or a header over the
        pixel limit. For a JPEG usually only the markers and the header are
        read. The marker walk is stricter than the decoder, though, and
        huImages once stored files it would refuse; their variants render, so
        when the walk fails only a full decode can tell damage from a quirk.
        Other formats have no cheap walk: they are decoded (once per node,
        as ``o`` is cached afterwards).
        """
        img = self._open(io.BytesIO(data))
        try:
            content_type = content_type_of(img.format, data) or "image/jpeg"  # legacy: as before
            if img.format in ("JPEG", "MPO"):
                try:
                    scan_jpeg(data)
                    return content_type
                except InvalidImage:
                    pass
            try:
                img.load()
            except _DECODE_ERRORS as exc:
                raise InvalidImage(f"cannot decode image: {exc}") from exc
            return content_type
        finally:
            img.close()

    def verify(self, data: bytes) -> None:
        """Decode ``data`` completely (the first frame of an animation), whatever the
        format; InvalidImage if it does not decode, ImageTooLarge if over a limit."""
        img = self._open(io.BytesIO(data))
        try:
            if img.format in ("JPEG", "MPO"):  # every scan is still decoded, at 1/8
                img.draft(img.mode, (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(str(exc)) from exc
        except _DECODE_ERRORS as exc:
            raise InvalidImage(f"cannot decode image: {exc}") from exc
        finally:
            img.close()

    def inspect(self, data: bytes, previews: bool = False) -> ImageInfo:
        """Validate an upload completely and return its upright dimensions.

        Accepted: what ``originals.content_type_of`` knows, decoded completely
        (the first frame of an animation). A JPEG is walked first
        (jpegscan.py) for a clear message on truncation and for what follows
        its primary image, which is kept and described (``trailer``); a JPEG
        the walk finds odd but the decoder reads is accepted as it is.

        With ``previews``, the decode that validates the upload is done at the
        scale the largest planned preview needs instead of 1/8, and the
        previews are made from those pixels: one decode per upload either way.
        """
        structure: JpegStructure | None = None
        trailer = None
        walk_error: InvalidImage | None = None
        if data[:3] == b"\xff\xd8\xff":
            try:
                structure, trailer = jpeg_trailer(data)
            except InvalidImage as exc:
                walk_error = exc  # the decoder decides; its verdict, if bad, gets this message
        try:  # only the decoders of accepted formats ever see an upload
            img = self._open(io.BytesIO(data), accepted_pillow_formats())
        except InvalidImage:
            if walk_error is not None:
                raise walk_error from None
            raise InvalidImage(
                f"not an image: only {ACCEPTED_DESCRIPTION} originals are accepted"
            ) from None
        content_type = content_type_of(img.format, data)
        if content_type is None:
            raise InvalidImage(
                f"{img.format} is not accepted: only {ACCEPTED_DESCRIPTION} originals are"
            )
        if structure is not None and img.size != (structure.width, structure.height):
            raise InvalidImage("corrupt JPEG: frame header and decoder disagree on the size")
        orientation = _orientation(img)
        width, height = _upright_size(img, orientation)
        planned = planned_previews(width, height) if previews else []
        try:
            if planned:
                made = self._make_previews(img, orientation, planned)
                return ImageInfo(width, height, content_type, made, trailer)
            if img.format in ("JPEG", "MPO"):
                img.draft(img.mode, (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()  # decodes every scan: truncation and corruption surface here
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(str(exc)) from exc
        except _DECODE_ERRORS as exc:
            if walk_error is not None:
                raise walk_error from exc
            raise InvalidImage(f"corrupt image data: {exc}") from exc
        return ImageInfo(width, height, content_type, (), trailer)

    def _make_previews(
        self, img: Image.Image, orientation: int, planned: list[tuple[str, int, int]]
    ) -> tuple[Preview, ...]:
        """Decode once at the coarsest DCT scale that covers the largest preview,
        make that preview, then each smaller one from the one before: upright,
        sRGB, no metadata.

        # -- issue 15 (upload cost) --
        ``planned_previews`` sizes a level at a DCT scale of the original where
        one is near it (a 12 MP photo's ``p2048`` is its 1/2 decode, 2016x1512):
        then the decode *is* the largest preview and nothing is resampled; the
        smaller levels come from it (Pillow's ``reducing_gap`` box-reduces most
        of the way first).
        """
        _, largest_w, largest_h = planned[0]
        stored_size = (largest_h, largest_w) if orientation >= 5 else (largest_w, largest_h)
        if img.format in ("JPEG", "MPO"):
            img.draft(img.mode if img.mode in _PLAIN_MODES else None, stored_size)
        img.load()  # decodes every scan: truncation and corruption surface here
        profile = img.info.get("icc_profile")
        pixels = _normalised(img)
        if pixels.size != stored_size:
            pixels = pixels.resize(stored_size, self.resample, reducing_gap=self.reducing_gap)
        # -- end issue 15 --
        if orientation != 1:
            pixels = pixels.transpose(_TRANSPOSE[orientation])
        pixels = _to_srgb(pixels, profile)
        if _opaque(pixels):
            pixels = pixels.convert("RGB")
        made = []
        for name, width, height in planned:
            if pixels.size != (width, height):
                pixels = pixels.resize((width, height), self.resample,
                                       reducing_gap=self.reducing_gap)
            pixels.info = {}
            out = io.BytesIO()
            if pixels.mode == "RGBA":  # transparency stays: lossless WebP (smaller than PNG)
                pixels.save(out, "WEBP", lossless=True, quality=0, method=0, exact=False)
            else:
                pixels.save(out, "JPEG", quality=self.preview_quality, subsampling="4:2:0")
            made.append(Preview(name, width, height, out.getvalue()))
        return tuple(made)

    def render(
        self,
        source: BinaryIO,
        size: Size,
        output: BinaryIO,
        fmt: str = "jpeg",
        *,
        original_size: tuple[int, int] | None = None,
        phase: Callable[[str], object] | None = None,
    ) -> tuple[int, int]:
        """Scale ``source`` to ``size`` and write the encoded result to ``output``.

        ``phase``, when given, is called with the name of each step as it
        ends (``open``, ``geometry``, ``decode``, ``resize``, ``transpose``,
        ``colour``, ``encode``): the hook bench/profile_paths.py times them by.

        With ``original_size`` (the original's upright width and height), the
        source is a preview of that original. The output size and region are
        still computed from the original's size, so they are exactly what
        ``scaled_dimensions`` predicts, and the region is mapped onto the
        preview by its actual scale in each direction. A preview is upright and
        sRGB already: its own EXIF and ICC (it has none) are not consulted.
        """
        encoding = output_format(fmt)  # an unknown format is refused before any decoding
        mark = phase or _ignore
        img = self._open(source)
        mark("open")
        if original_size is None:
            orientation = _orientation(img)
            upright_w, upright_h = _upright_size(img, orientation)
            geometry = scaled_geometry(upright_w, upright_h, size)
            region, slack, resample = geometry.box, 0.0, self.resample
        else:
            orientation, (upright_w, upright_h) = 1, img.size
            geometry = scaled_geometry(*original_size, size)
            region = _scale_box(geometry.box, original_size, img.size)
            # a DCT scale landing within a pixel of the output is used as it is
            slack, resample = 1.0, self.preview_resample
        mark("geometry")
        try:
            if original_size is None:
                reduction = self._draft(img, orientation, region, geometry.width, geometry.height)
            else:
                whole = geometry.box == (0.0, 0.0, *map(float, original_size))
                reduction = self._draft_preview(img, region, geometry.width, geometry.height, whole)
            img.load()
            mark("decode")
            profile = img.info.get("icc_profile") if original_size is None else None
            img = _normalised(img)
            # Resample in stored orientation and turn only the small result upright.
            left, top, right, bottom = _stored_box(region, orientation, upright_w, upright_h)
            box = (left / reduction, top / reduction, right / reduction, bottom / reduction)
            out_size = (geometry.width, geometry.height)
            if orientation >= 5:
                out_size = (geometry.height, geometry.width)
            if out_size != img.size or not _is_whole(box, img.size, slack):
                img = img.resize(out_size, resample, box=box, reducing_gap=self.reducing_gap)
            mark("resize")
            if orientation != 1:
                img = img.transpose(_TRANSPOSE[orientation])
            mark("transpose")
            img = _to_srgb(img, profile)
            mark("colour")
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(str(exc)) from exc
        except _DECODE_ERRORS as exc:
            raise InvalidImage(f"cannot decode image: {exc}") from exc
        self._encode(img, encoding, output)
        mark("encode")
        return geometry.width, geometry.height

    def _encode(self, img: Image.Image, encoding: OutputFormat, output: BinaryIO) -> None:
        """Write the finished pixels, outside the decode's error handling on purpose.

        Everything here happens after the source decoded, so an OSError is the
        output's (a full disk, an I/O error) and never evidence of a bad
        original: reported as InvalidImage, it would get a healthy image
        marked broken, i.e. deleted. WriteFailed is a 503, to be retried.
        """
        if encoding.pillow_format == "JPEG" or _opaque(img):
            img = flatten(img, self.background)
        img.info = {}  # AVIF and PNG would carry EXIF/ICC over from the original
        try:
            img.save(output, encoding.pillow_format, **save_options(encoding, self.quality))
            output.flush()  # a buffered tail (WebP's whole file) fails here, not at close
        except OSError as exc:
            raise WriteFailed(f"cannot write the {encoding.pillow_format} output: {exc}") from exc

    def _decode_scaled(
        self,
        img: Image.Image,
        orientation: int,
        box: tuple[float, float, float, float],
        out_w: int,
        out_h: int,
    ) -> Image.Image:
        """Decode ``img`` at the reduced scale ``render`` would use (the bench's floor)."""
        self._draft(img, orientation, box, out_w, out_h)
        img.load()
        return img

    def _draft_preview(
        self,
        img: Image.Image,
        region: tuple[float, float, float, float],
        out_w: int,
        out_h: int,
        whole: bool,
    ) -> int:
        """Decode a preview at the DCT scale ``previews.preview_reduction`` picks."""
        region_size = (region[2] - region[0], region[3] - region[1])
        scale = preview_reduction(region_size, (out_w, out_h), whole) or 1
        if scale > 1 and img.format in ("JPEG", "MPO"):
            stored_w = img.width
            drafted = img.draft("RGB", (max(1, img.width // scale), max(1, img.height // scale)))
            if drafted is not None:
                return round(stored_w / drafted[1][2])
        return 1

    def _draft(
        self,
        img: Image.Image,
        orientation: int,
        box: tuple[float, float, float, float],
        out_w: int,
        out_h: int,
    ) -> int:
        """Let libjpeg decode at 1/2, 1/4 or 1/8 when the output is small enough.

        The decode is most of the cost of a variant, and a scaled decode skips
        most of the IDCT, upsampling and colour conversion work. The request
        is the size of the whole image at the resolution the output region
        needs (times ``draft_gap``), rounded up: Pillow then picks the
        smallest scale that still covers it, so we never upscale. Returns the
        reduction (1, 2, 4 or 8); the decoded size is the stored size divided
        by it, rounded up.
        """
        if img.format in ("JPEG", "MPO"):
            region_w, region_h = box[2] - box[0], box[3] - box[1]
            upright_w, upright_h = _upright_size(img, orientation)
            need_w = upright_w * out_w / region_w * self.draft_gap
            need_h = upright_h * out_h / region_h * self.draft_gap
            if orientation >= 5:
                need_w, need_h = need_h, need_w
            request = (max(1, math.ceil(need_w)), max(1, math.ceil(need_h)))
            if request[0] < img.width and request[1] < img.height:
                stored_w = img.width
                drafted = img.draft(img.mode if img.mode in ("RGB", "L", "CMYK") else None, request)
                if drafted is not None:  # (mode, (0, 0, stored_w / scale, stored_h / scale))
                    return round(stored_w / drafted[1][2])
        return 1
