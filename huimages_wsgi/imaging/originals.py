"""Which originals are accepted, what they are called, and what follows a JPEG.

An original is stored and served byte for byte: it is the user's file. It
may be a JPEG (MPO and the camera files with trailers included), PNG, WebP,
AVIF, HEIC/HEIF, GIF, TIFF (its first page) or BMP, as huImages took anything
Pillow opens that people send. Each is served under ``/o/<ID>.<ext>`` with the
extension of its own type (``core.formats.ORIGINAL_TYPES``), so a webserver serving the
cache directory sends the right ``Content-Type`` too. HEIC/HEIF is decoded by
``pillow-heif``, whose Pillow opener is registered on import of this module.

A JPEG is what its primary image is: whatever follows the end marker
(further MPF frames such as a gain map or a stereo view, the MP4 of a Motion
Photo, Samsung's ``SEFH``...``SEFT`` trailer, padding, stray bytes) is kept
and described by ``describe_trailer``, which only classifies, never refuses.
Serving such bytes is safe because ``o`` is inert: every original goes out
with its real type, ``nosniff`` and a sandboxing Content-Security-Policy.
"""

from __future__ import annotations

import re
from typing import Any

import pillow_heif
from PIL import Image

from ..core.errors import InvalidImage

pillow_heif.register_heif_opener()

#: Pillow format name -> content type, for the formats an upload may have.
_PILLOW_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "AVIF": "image/avif",
    "GIF": "image/gif",
    "TIFF": "image/tiff",
    "BMP": "image/bmp",
}


def accepted_pillow_formats() -> tuple[str, ...]:
    """The Pillow decoders an upload may reach (HEIF is pillow-heif's; MPO is JPEG's;
    a Pillow built without AVIF has none to offer)."""
    Image.init()
    wanted = ("JPEG", "PNG", "WEBP", "AVIF", "GIF", "HEIF", "TIFF", "BMP")
    return tuple(name for name in wanted if name in Image.OPEN)

#: HEIF major brands whose primary image is HEVC coded: ``.heic``; other HEIF is ``.heif``.
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"})
ACCEPTED_DESCRIPTION = "JPEG, PNG, WebP, AVIF, HEIC/HEIF, GIF, TIFF or BMP"

#: Bytes a camera or an editor pads a file with; a trailer of only these is "padding".
PADDING = b"\x00\xff\r\n\t "
#: The next frame of a Multi-Picture file: its SOI after optional padding (0xFF fill may
#: run straight into the SOI's own 0xFF).
_NEXT_FRAME = re.compile(rb"[\x00\r\n\t ]*\xff+\xd8\xff")


#: The TIFF compressions scanners, cameras and editors write (none, CCITT fax, LZW,
#: JPEG, Deflate, PackBits): libtiff's rarer codecs never see an upload.
TIFF_COMPRESSIONS = frozenset({1, 2, 3, 4, 5, 7, 8, 32773, 32946})


def check_tiff(img: Image.Image) -> None:
    """InvalidImage for a TIFF with a compression outside the list or with more strips
    or tiles than its pixels can fill (a file made to make the decoder work)."""
    tags = img.tag_v2  # type: ignore[attr-defined]
    compression = tags.get(259, 1)
    if compression not in TIFF_COMPRESSIONS:
        raise InvalidImage(f"TIFF compression {compression} is not accepted")
    width, height = img.size
    planes = int(tags.get(277, 1) or 1) if tags.get(284, 1) == 2 else 1
    tile_w, tile_h = int(tags.get(322, 0) or 0), int(tags.get(323, 0) or 0)
    if tile_w and tile_h:
        most = -(-width // tile_w) * -(-height // tile_h) * planes
        count = len(tags.get(324) or ())
    else:
        most, count = height * planes, len(tags.get(273) or ())
    if count > most:
        raise InvalidImage(f"corrupt TIFF: {count} strips or tiles for {width}x{height} pixels")


def content_type_of(pillow_format: str | None, data: bytes) -> str | None:
    """The content type of an accepted original, None for a format we do not accept."""
    if pillow_format == "HEIF":
        return "image/heic" if data[8:12] in _HEIC_BRANDS else "image/heif"
    return _PILLOW_TYPES.get(pillow_format or "")


def describe_trailer(trailer: bytes, is_mpf: bool) -> dict[str, Any] | None:
    """What follows a JPEG's primary image, for the catalog; None when nothing does.

    ``kind`` is ``samsung`` (a ``SEFH``...``SEFT`` trailer, which may itself
    hold a video), ``video`` (an MP4/QuickTime ``ftyp`` box: a Motion Photo),
    ``mpf`` (further JPEG frames of a Multi-Picture file: stereo views,
    gain maps), ``padding`` (only zero, 0xFF or whitespace bytes) or
    ``unknown`` (anything else, e.g. one stray byte, or a payload). The
    bytes are kept whatever the kind.
    """
    if not trailer:
        return None
    stripped = trailer.strip(PADDING)
    if stripped.endswith(b"SEFT") and b"SEFH" in stripped:
        kind = "samsung"
    elif _has_ftyp_box(trailer):
        kind = "video"
    elif not stripped:
        kind = "padding"
    elif is_mpf and _NEXT_FRAME.match(trailer):
        kind = "mpf"
    else:
        kind = "unknown"
    return {"bytes": len(trailer), "kind": kind}


def _has_ftyp_box(trailer: bytes) -> bool:
    """An ISO BMFF file (MP4, MOV) starts with a box ``<size:4>ftyp``; Motion Photos append one.

    It may follow further JPEG frames (a gain map before the video), so any
    ``ftyp`` whose four preceding bytes are a plausible box size counts.
    """
    pos = trailer.find(b"ftyp")
    while pos >= 4:
        size = int.from_bytes(trailer[pos - 4 : pos], "big")
        if 8 <= size <= 4096:
            return True
        pos = trailer.find(b"ftyp", pos + 1)
    return False
