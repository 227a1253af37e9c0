"""A structural walk over JPEG markers, without decoding pixels.

It finds where the primary image ends (its EOI marker), its frame size, and
whether it is a Multi-Picture (MPF) file, and it catches truncation with a
clear message before any decoding. What follows the end marker is kept (a
camera's trailer, further frames, a video: see ``originals.describe_trailer``);
``o`` is served inert, so bytes after the image are no danger to our domain.

``jpeg_cost`` counts the scans (SOS markers) of the primary image the way
libjpeg reaches them, for the limit on progressive scans (bounds.py): every
scan of a progressive JPEG is another pass over the whole image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..core.errors import InvalidImage
from .originals import describe_trailer

_SOF_MARKERS = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


@dataclass(frozen=True)
class JpegStructure:
    end: int  # offset just past the EOI marker of the primary frame
    width: int
    height: int
    is_mpf: bool


#: A 0xFF that starts a marker inside entropy-coded data: not stuffing (0xFF00), not a
#: restart marker (RSTn), not a fill byte (another 0xFF follows).
_MARKER_IN_SCAN = re.compile(rb"\xff(?=[^\x00\xd0-\xd7\xff])")


def _next_marker_after_scan(data: bytes, pos: int) -> int:
    """Skip entropy-coded data: stuffed 0xFF00 and RSTn are not markers. (One regular
    expression search, in C: the Python loop over every 0xFF took 8 ms of the bench's
    8 MP original and 13 ms of its panorama, against 1.7 and 2.7 ms now, and an upload
    walks the original twice: ``jpeg_trailer`` and the scan count of bounds.py.)"""
    found = _MARKER_IN_SCAN.search(data, pos)
    if found is None:
        raise InvalidImage("truncated JPEG: scan data runs to the end of the file")
    return found.start()


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


@dataclass(frozen=True)
class JpegCost:
    """What decoding a JPEG's primary image costs beyond its pixels."""

    scans: int  # SOS markers, counted no further than the limit plus one
    progressive: bool
    coefficient_bytes: int  # libjpeg's whole-image coefficient buffer (multi-scan only)


def jpeg_cost(data: bytes, most_scans: int) -> JpegCost:
    """The scans (SOS markers) of the primary image, counted no further than
    ``most_scans + 1``, and the coefficient buffer libjpeg allocates for a
    progressive or multi-scan JPEG (two bytes a coefficient, 64 a block, every
    block of every component, whatever the DCT scale of the output).

    Lenient where ``scan_jpeg`` is strict, as libjpeg is: bytes that are not
    a marker are skipped (libjpeg warns and resyncs at the next 0xFF), a
    segment's length is followed without looking inside (an EXIF thumbnail's
    own scans are not counted), and the count ends at the end marker or
    wherever the file runs out. So a file the strict walk refuses still has
    its scans counted before any decoder sees it. Nothing is decoded.
    """
    pos, size, scans, frame, progressive = 2, len(data), 0, b"", False
    while scans <= most_scans:
        pos = data.find(b"\xff", pos)
        while 0 <= pos < size and data[pos] == 0xFF:
            pos += 1
        if pos < 0 or pos >= size:
            break
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            break
        if marker == 0x00 or marker in _STANDALONE or pos + 2 > size:
            continue
        length = int.from_bytes(data[pos : pos + 2], "big")
        if marker in _SOF_MARKERS and not frame:
            frame = data[pos + 2 : pos + length]
            progressive = marker in _PROGRESSIVE
        pos += length
        if marker == 0xDA:
            scans += 1
            try:
                pos = _next_marker_after_scan(data, pos)
            except InvalidImage:
                break
    multi = progressive or scans > 1
    return JpegCost(scans, progressive, _coefficient_bytes(frame) if multi else 0)


def _coefficient_bytes(frame: bytes) -> int:
    """Bytes of libjpeg's coefficient arrays for the frame header ``frame`` (SOFn)."""
    if len(frame) < 6:
        return 0
    height, width = int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big")
    sampling = [(byte >> 4, byte & 15) for byte in frame[7 : 6 + 3 * frame[5] : 3]]
    if not sampling or not all(h and v for h, v in sampling):
        return 0
    h_max, v_max = max(h for h, _ in sampling), max(v for _, v in sampling)
    mcu_w, mcu_h = -(-width // (8 * h_max)), -(-height // (8 * v_max))
    return sum(mcu_w * h * mcu_h * v * 128 for h, v in sampling)
