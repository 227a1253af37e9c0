"""The output formats a variant can be encoded in, chosen by the URL's extension.

Each format is its own cache file (``<size>/<ID>.jpeg``, ``.webp``, ``.avif``,
``.png``), so a webserver serves every one of them straight from disk with the
Content-Type its extension maps to, and no ``Vary: Accept`` negotiation is
needed: the page picks the format with ``<picture>``.

All four are encoded by Pillow itself. AVIF uses Pillow's built-in plugin
(Pillow 11.3 and later bundle libavif in their wheels) rather than the
third-party ``pillow-avif-plugin``: one dependency less, the same ``save()``
API as every other format, and it is maintained with Pillow. The encoder
settings below trade a little size for a lot of speed, because a variant is
encoded on the request that first asks for it (medians on a 1024x768 photo,
two cores: AVIF speed 6 takes 230 ms for 54 kB, speed 7 130 ms for 56 kB,
speed 8 100 ms for 66 kB; WebP method 6 saves 1.5 % over method 4 for 18 %
more time).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import features

from .errors import InvalidPath, InvalidSize
from .sizes import Size

#: Extension of ``/o/<ID>.<ext>`` -> the Content-Type it is served with.
ORIGINAL_TYPES: Mapping[str, str] = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "avif": "image/avif",
    "heic": "image/heic",
    "heif": "image/heif",
    "gif": "image/gif",
    "tiff": "image/tiff",
    "bmp": "image/bmp",
}
_EXT_BY_TYPE = {content_type: ext for ext, content_type in ORIGINAL_TYPES.items()}
_EXT_BY_TYPE.update({"image/jpg": "jpeg", "image/pjpeg": "jpeg", "image/x-ms-bmp": "bmp"})

def ext_for_type(content_type: Any) -> str:
    """The ``/o/`` extension for a catalog ``contenttype``; ``jpeg`` when unknown (legacy)."""
    if isinstance(content_type, str):
        return _EXT_BY_TYPE.get(content_type.split(";")[0].strip().lower(), "jpeg")
    return "jpeg"


#: A PNG of a photo is lossless and about ten times the JPEG (1.1 MB at 1024x768),
#: so PNG variants are offered for boxes up to this many pixels per side only:
#: thumbnails and previews for tools that insist on PNG, not a way to ship megabytes.
PNG_MAX_SIDE = 1024


@dataclass(frozen=True)
class OutputFormat:
    """How one extension is encoded and served."""

    ext: str
    pillow_format: str
    content_type: str
    #: Pillow ``save()`` options besides quality; never metadata (no EXIF, XMP or ICC).
    options: Mapping[str, Any] = field(default_factory=dict)
    #: Fixed quality for this format, or None to use the configured JPEG quality.
    quality: int | None = None
    lossless: bool = False


_ALL_FORMATS: dict[str, OutputFormat] = {
    "jpeg": OutputFormat("jpeg", "JPEG", "image/jpeg"),
    # q80 (WebP) and q60 (AVIF, whose scale runs lower) match JPEG q85's PSNR on a
    # 1024x768 photo at 54 % and 49 % of its bytes; WebP method 4 is Pillow's default.
    "webp": OutputFormat("webp", "WEBP", "image/webp", {"method": 4}, quality=80),
    "avif": OutputFormat("avif", "AVIF", "image/avif", {"speed": 7}, quality=60),
    "png": OutputFormat("png", "PNG", "image/png", {"compress_level": 6}, lossless=True),
}


def _encodable(fmt: OutputFormat) -> bool:
    """Pillow builds without libwebp or libavif exist (distributions, source builds)."""
    feature = {"WEBP": "webp", "AVIF": "avif"}.get(fmt.pillow_format)
    return feature is None or bool(features.check(feature))


#: What this Pillow can encode; an extension it cannot is an unknown one (404), not a 500.
FORMATS: dict[str, OutputFormat] = {
    ext: fmt for ext, fmt in _ALL_FORMATS.items() if _encodable(fmt)
}
#: Known formats this Pillow cannot encode: ``scaled_tag`` leaves their sources out.
UNAVAILABLE: frozenset[str] = frozenset(_ALL_FORMATS) - frozenset(FORMATS)
CONTENT_TYPES: dict[str, str] = {ext: fmt.content_type for ext, fmt in FORMATS.items()}
#: Every extension an image URL may end in: the variants' and the originals' (``o/<ID>.heic``).
SERVED_TYPES: dict[str, str] = {**ORIGINAL_TYPES, **CONTENT_TYPES}


def output_format(ext: str) -> OutputFormat:
    try:
        return FORMATS[ext]
    except KeyError:
        raise InvalidPath(f"unsupported extension: use one of {sorted(FORMATS)}") from None


def check_variant(size: Size, ext: str, original_ext: str | None = None) -> OutputFormat | None:
    """Refuse the combinations that make no sense, with a message that says why.

    ``o`` is the uploaded file, byte for byte, at the extension of its own
    type (originals.py): transcoding it would make a second, different
    "original" (ask for a box as large as the image, e.g. ``4096x4096.avif``,
    for a full-size AVIF: boxes never upscale). With ``original_ext`` (the
    image's, when the caller knows it) any other extension is refused here;
    without, only one no original can have. PNG is lossless, so it is kept
    to small boxes (``PNG_MAX_SIDE``). None for ``o``, else the output format.
    """
    if size.is_original:
        if ext not in ORIGINAL_TYPES:
            raise InvalidPath(f"unsupported extension for an original: use one of "
                              f"{sorted(ORIGINAL_TYPES)}")
        if original_ext is not None and ext != original_ext:
            raise wrong_original_ext("<ID>", ext, original_ext)
        return None
    fmt = output_format(ext)
    if fmt.lossless and max(size.width, size.height) > PNG_MAX_SIDE:
        raise InvalidSize(
            f"PNG is lossless and large: only sizes up to {PNG_MAX_SIDE} pixels per side; "
            "use .webp, .avif or .jpeg for bigger ones"
        )
    return fmt


def wrong_original_ext(imageid: str, asked: str, actual: str) -> InvalidPath:
    """The 404 for ``/o/<ID>.<asked>`` when the original is a ``.<actual>``: it names the URL."""
    hint = ""
    if asked in FORMATS:
        hint = f"; ask for a size (e.g. 4096x4096.{asked}) to get a .{asked}"
    return InvalidPath(
        f"the original of this image is a {ORIGINAL_TYPES.get(actual, actual)} file, served at"
        f" /o/{imageid}.{actual}, not as .{asked}{hint}"
    )


def save_options(fmt: OutputFormat, jpeg_quality: int) -> dict[str, Any]:
    """Keyword arguments for ``Image.save`` (quality only where the format has one)."""
    options = dict(fmt.options)
    if not fmt.lossless:
        options["quality"] = fmt.quality if fmt.quality is not None else jpeg_quality
    return options


#: The formats a ``.jpeg`` URL may answer in by ``Accept`` (HUIMAGES_AUTO_FORMATS).
AUTO_FORMATS = ("avif", "webp")


def accepted_format(accept: str, offered: Sequence[str]) -> str | None:
    """The first of ``offered`` (extensions, the preferred first) whose media type the
    ``Accept`` header names with a q above 0; None when it names none of them. Only
    an explicit ``image/avif`` counts: every browser also sends ``*/*``."""
    named: dict[str, float] = {}
    for part in accept[:2000].split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        named[media.lower()] = quality
    for ext in offered:
        if ext in CONTENT_TYPES and named.get(CONTENT_TYPES[ext], 0.0) > 0:
            return ext  # (a format this Pillow cannot write is never offered)
    return None
