"""A structural walk over JPEG markers, without decoding pixels.

It finds where the primary image ends (its EOI marker), its frame size, and
whether it is a Multi-Picture (MPF) file, and it catches truncation with a
clear message before any decoding. What follows the end marker is kept (a
camera's trailer, further frames, a video: see ``originals.describe_trailer``);
``o`` is served inert, so bytes after the image are no danger to our domain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.errors import InvalidImage
from .originals import describe_trailer

_SOF_MARKERS = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


@dataclass(frozen=True)
class JpegStructure:
    end: int  # offset just past the EOI marker of the primary frame
    width: int
    height: int
    is_mpf: bool


def _next_marker_after_scan(data: bytes, pos: int) -> int:
    """Skip entropy-coded data: stuffed 0xFF00 and RSTn are not markers."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            raise InvalidImage("truncated JPEG: scan data runs to the end of the file")
        following = data[pos + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            pos += 1 if following == 0xFF else 2
            continue
        return pos


def scan_jpeg(data: bytes) -> JpegStructure:
    if len(data) < 4 or data[:3] != b"\xff\xd8\xff":
        raise InvalidImage("not a JPEG file")
    pos, width, height, is_mpf, seen_scan = 2, 0, 0, False, False
    size = len(data)
    while pos < size:
        if data[pos] != 0xFF:
            raise InvalidImage(f"corrupt JPEG: expected a marker at offset {pos}")
        while pos < size and data[pos] == 0xFF:
            pos += 1
        if pos >= size:
            break
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            if not seen_scan or not width:
                raise InvalidImage("corrupt JPEG: no image data before the end marker")
            return JpegStructure(pos, width, height, is_mpf)
        if marker in _STANDALONE:
            continue
        if pos + 2 > size:
            break
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2 or pos + length > size:
            break
        segment = data[pos + 2 : pos + length]
        if marker in _SOF_MARKERS and len(segment) >= 5:
            height = int.from_bytes(segment[1:3], "big")
            width = int.from_bytes(segment[3:5], "big")
        elif marker == 0xE2 and segment.startswith(b"MPF\x00"):
            is_mpf = True
        pos += length
        if marker == 0xDA:
            seen_scan = True
            pos = _next_marker_after_scan(data, pos)
    raise InvalidImage("truncated JPEG: the file ends before its end marker")


def jpeg_trailer(data: bytes) -> tuple[JpegStructure, dict[str, Any] | None]:
    """The structure of a JPEG and a description of what follows its primary image."""
    structure = scan_jpeg(data)
    return structure, describe_trailer(data[structure.end :], structure.is_mpf)
