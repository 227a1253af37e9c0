"""Checking originals: an upload completely (decoded once, its previews made from the
same pixels), a stored original cheaply before it is served as ``o``.

Accepted: what ``originals.content_type_of`` knows, decoded completely (the
first frame of an animation). A JPEG is walked first (jpegscan.py) for a clear
message on truncation and for what follows its primary image, which is kept
and described (``trailer``); a JPEG the walk finds odd but the decoder reads
is accepted as it is.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from PIL import Image

from ..core.errors import InvalidImage
from ..core.previews import planned_previews, preview_decode_scale
from .bounds import open_bounded
from .decode import decoding, is_jpeg
from .jpegscan import JpegStructure, jpeg_trailer, scan_jpeg
from .originals import (
    ACCEPTED_DESCRIPTION,
    accepted_pillow_formats,
    check_tiff,
    content_type_of,
)
from .pixels import PLAIN_MODES, TRANSPOSE, normalised, opaque, orientation, to_srgb, upright_size
from .settings import EngineSettings

#: ``admit(pixels)``: held while an upload decodes ``pixels`` (the store's render
#: admission: a slot, and a decode slot for a large decode; or a 503 at once).
Admit = Callable[[int], AbstractContextManager[object]]


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


def inspect(settings: EngineSettings, data: bytes, previews: bool = False,
            admit: Admit | None = None) -> ImageInfo:
    """Validate an upload completely and return its upright dimensions.

    With ``previews``, the decode that validates the upload is done at the
    scale the largest planned preview needs instead of 1/8, and the previews
    are made from those pixels: one decode per upload either way. The
    header is checked against every limit first (bounds.py), and the decode
    and the previews run inside ``admit(pixels)`` (the pixels decoded).
    """
    structure: JpegStructure | None = None
    trailer = None
    walk_error: InvalidImage | None = None
    if data[:3] == b"\xff\xd8\xff":
        try:
            structure, trailer = jpeg_trailer(data)
        except InvalidImage as exc:
            walk_error = exc  # the decoder decides; its verdict, if bad, gets this message
    img = _open_upload(settings, data, walk_error)
    content_type = content_type_of(img.format, data)
    if content_type is None:
        raise InvalidImage(
            f"{img.format} is not accepted: only {ACCEPTED_DESCRIPTION} originals are"
        )
    if img.format == "TIFF":
        check_tiff(img)
    if structure is not None and img.size != (structure.width, structure.height):
        raise InvalidImage("corrupt JPEG: frame header and decoder disagree on the size")
    turn = orientation(img)
    width, height = upright_size(img, turn)
    planned = planned_previews(width, height) if previews else []
    whole = img.width * img.height
    with decoding("corrupt image data", walk_error):
        if planned:
            _draft_for_previews(img, turn, planned)
        elif is_jpeg(img):
            img.draft(img.mode, (max(1, img.width // 8), max(1, img.height // 8)))
        # a progressive JPEG works on all its coefficients at any DCT scale
        pixels = whole if img.info.get("progression") else img.width * img.height
        with nullcontext() if admit is None else admit(pixels):
            if planned:
                made = make_previews(settings, img, turn, planned)
                return ImageInfo(width, height, content_type, made, trailer)
            img.load()  # decodes every scan: truncation and corruption surface here
    return ImageInfo(width, height, content_type, (), trailer)


def _open_upload(settings: EngineSettings, data: bytes,
                 walk_error: InvalidImage | None) -> Image.Image:
    """Only the decoders of accepted formats ever see an upload."""
    try:
        return open_bounded(io.BytesIO(data), settings, accepted_pillow_formats())
    except InvalidImage:
        if walk_error is not None:
            raise walk_error from None
        raise InvalidImage(
            f"not an image: only {ACCEPTED_DESCRIPTION} originals are accepted"
        ) from None


def make_previews(
    settings: EngineSettings, img: Image.Image, turn: int, planned: list[tuple[str, int, int]]
) -> tuple[Preview, ...]:
    """Decode once at the coarsest DCT scale that covers the largest preview,
    make that preview, then each smaller one from the one before: upright,
    sRGB, no metadata.

    ``planned_previews`` sizes a level at a DCT scale of the original where
    one is near it (a 12 MP photo's ``p2048`` is its 1/2 decode, 2016x1512):
    then the decode *is* the largest preview and nothing is resampled; the
    smaller levels come from it (Pillow's ``reducing_gap`` box-reduces most
    of the way first).
    """
    stored_size = _draft_for_previews(img, turn, planned)  # again: nothing if done
    img.load()  # decodes every scan: truncation and corruption surface here
    profile = img.info.get("icc_profile")
    pixels = normalised(img)
    if pixels.size != stored_size:
        # up from a DCT scale below the level (previews.SOURCE_MIN): LANCZOS, which keeps
        # the detail the level's 1/2 decode shows (BICUBIC cost 0.3 dB there)
        upscale = pixels.width < stored_size[0]
        pixels = pixels.resize(stored_size, settings.preview_resample if upscale
                               else settings.resample, reducing_gap=settings.reducing_gap)
    if turn != 1:
        pixels = pixels.transpose(TRANSPOSE[turn])
    pixels = to_srgb(pixels, profile)
    if pixels.mode != "RGB" and opaque(pixels):
        pixels = pixels.convert("RGB")
    made = []
    for name, width, height in planned:
        factor = pixels.width // width
        if factor > 1 and pixels.size == (width * factor, height * factor):  # 2048 -> 512
            pixels = pixels.reduce(factor)  # a box average, 5x faster than BICUBIC
        elif pixels.size != (width, height):
            pixels = pixels.resize((width, height), settings.resample,
                                   reducing_gap=settings.reducing_gap)
        made.append(Preview(name, width, height, _preview_bytes(pixels, settings)))
    return tuple(made)


def _draft_for_previews(img: Image.Image, turn: int,
                        planned: list[tuple[str, int, int]]) -> tuple[int, int]:
    """Let a JPEG decode at the DCT scale ``previews.preview_decode_scale`` picks (else the
    coarsest that covers the largest preview); that preview's size as stored (before
    EXIF orientation), which the decoded pixels are resized to (up or down) if they
    are not that size already."""
    _, largest_w, largest_h = planned[0]
    stored_size = (largest_h, largest_w) if turn >= 5 else (largest_w, largest_h)
    if is_jpeg(img):
        scale = preview_decode_scale(img.width, img.height)
        # Pillow's draft picks the coarsest scale s with size // request >= s
        request = stored_size if scale is None else (
            max(1, img.width // scale), max(1, img.height // scale))
        img.draft(img.mode if img.mode in PLAIN_MODES else None, request)
    return stored_size


def _preview_bytes(pixels: Image.Image, settings: EngineSettings) -> bytes:
    pixels.info = {}
    out = io.BytesIO()
    if pixels.mode == "RGBA":  # transparency stays: lossless WebP (smaller than PNG)
        pixels.save(out, "WEBP", lossless=True, quality=0, method=0, exact=False)
    else:
        pixels.save(out, "JPEG", quality=settings.preview_quality, subsampling="4:2:0")
    return out.getvalue()


def check_stored(settings: EngineSettings, data: bytes) -> str:
    """Cheap checks before a stored original is served byte for byte as ``o``;
    returns its content type (which decides the ``/o/`` extension).

    Uploads are validated completely; this catches what storage damaged:
    no image at all, an empty or truncated JPEG, or a header over the
    pixel limit, and what a limit of this server refuses before decoding
    (too many scans, too much memory: bounds.py), as an older upload may.
    For a JPEG usually only the markers and the header are read. The
    marker walk is stricter than the decoder, though, and huImages once
    stored files it would refuse; their variants render, so when the walk
    fails only a full decode can tell damage from a quirk.
    Other formats have no cheap walk: they are decoded (once per node,
    as ``o`` is cached afterwards).
    """
    img = open_bounded(io.BytesIO(data), settings)
    try:
        # huImages stored JPEGs only: an unrecognised legacy original is served as one
        content_type = content_type_of(img.format, data) or "image/jpeg"
        if is_jpeg(img):
            try:
                scan_jpeg(data)
                return content_type
            except InvalidImage:
                pass
        with decoding():
            img.load()
        return content_type
    finally:
        img.close()


def verify(settings: EngineSettings, data: bytes) -> None:
    """Decode ``data`` completely (the first frame of an animation), whatever the
    format; InvalidImage if it does not decode, ImageTooLarge if over a limit."""
    img = open_bounded(io.BytesIO(data), settings)
    try:
        with decoding():
            if is_jpeg(img):  # every scan is still decoded, at 1/8
                img.draft(img.mode, (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
    finally:
        img.close()
