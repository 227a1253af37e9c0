"""Originals the way phones, cameras and shops make them, built with Pillow and pillow-heif.

Multi-Picture files with and without padding between their frames (the MPF
index is rewritten so the file stays valid, as in Pillow's ``frozenpond.mpo``),
Google Motion Photos (JPEG + XMP + an appended MP4), Samsung's ``SEFH``...
``SEFT`` trailer, a stray byte, HEIC with orientation and a colour profile,
PNG/WebP/AVIF with transparency, animations, and a JPEG/HTML polyglot.
Deterministic, so a failure can be reproduced byte for byte.
"""

from __future__ import annotations

import io
import struct

import pillow_heif
from PIL import Image

from . import imagefactory as f

pillow_heif.register_heif_opener()

HTML_PAYLOAD = b"<html><body><script>alert(document.domain)</script></body></html>"


def mpo(width: int = 640, height: int = 480, padding: int = 0) -> bytes:
    """A two-frame MPO (a stereo pair), with ``padding`` zero bytes before the second frame.

    Pillow writes the frames back to back; cameras often leave a gap. The MP
    Entry offsets (relative to the MPF header) are moved by the gap, so the
    file stays a valid MPO that Pillow opens both frames of.
    """
    left = f.photo(width, height, seed=3)
    right = left.rotate(3)
    data = f.encode(left, "MPO", save_all=True, append_images=[right], quality=90)
    if not padding:
        return data
    mpf = data.index(b"MPF\x00") + 4  # the TIFF header of the MP index
    order = "<" if data[mpf : mpf + 2] == b"II" else ">"
    ifd = mpf + struct.unpack(order + "I", data[mpf + 4 : mpf + 8])[0]
    (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
    patched = bytearray(data)
    second = None
    for i in range(count):
        tag, _typ, length, value = struct.unpack(
            order + "HHII", data[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
        )
        if tag == 0xB002:  # MPEntry: 16 bytes per image
            for entry in range(length // 16):
                at = mpf + value + 16 * entry + 8
                (offset,) = struct.unpack(order + "I", data[at : at + 4])
                if offset:
                    second = mpf + offset
                    patched[at : at + 4] = struct.pack(order + "I", offset + padding)
    assert second is not None and data[second : second + 2] == b"\xff\xd8"
    return bytes(patched[:second]) + b"\x00" * padding + bytes(patched[second:])


def mp4_box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def tiny_mp4() -> bytes:
    """The start of an MP4 as a Pixel appends it: ``ftyp``, then media data."""
    ftyp = mp4_box(b"ftyp", b"mp42" + b"\x00\x00\x00\x00" + b"isommp42")
    return ftyp + mp4_box(b"free", b"") + mp4_box(b"mdat", bytes(range(256)) * 8)


def motion_photo(width: int = 1200, height: int = 900) -> bytes:
    """A Google Motion Photo: JPEG whose XMP says where the appended MP4 starts."""
    video = tiny_mp4()
    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF'
        ' xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:GCamera="http://ns.google.com/photos/1.0/camera/"'
        f' GCamera:MotionPhoto="1" GCamera:MotionPhotoVersion="1"'
        f' GCamera:MicroVideoOffset="{len(video)}"/></rdf:RDF></x:xmpmeta>'
    ).encode()
    still = f.encode(f.photo(width, height, seed=5), quality=90, xmp=xmp)
    return still + video


def samsung_trailer() -> bytes:
    """Samsung's SEF trailer: data blocks, then ``SEFH``, a directory, its length, ``SEFT``."""
    name = b"Image_UTC_Data"
    block = struct.pack("<HHI", 0, 0x0A01, len(name)) + name + b"1700000000000"
    directory = b"SEFH" + struct.pack("<II", 107, 1) + struct.pack("<HHII", 0, 0x0A01,
                                                                   len(block), len(block))
    return block + directory + struct.pack("<I", len(directory)) + b"SEFT"


def samsung_jpeg() -> bytes:
    return f.photo_jpeg(1000, 750, seed=6) + samsung_trailer()


def stray_byte_jpeg() -> bytes:
    """An old camera's file: one byte after the end marker."""
    return f.photo_jpeg(640, 480, seed=8) + b"!"


def polyglot_jpeg() -> bytes:
    """A JPEG that is also an HTML page: what ``o`` must never let a browser run."""
    return f.photo_jpeg(320, 240, seed=9) + HTML_PAYLOAD


def heic(upright_w: int = 1600, upright_h: int = 1200, orientation: int = 1,
         icc: bytes | None = None) -> bytes:
    """A HEIC as an iPhone writes it (pillow-heif turns an EXIF orientation into irot)."""
    upright = f.quadrants(upright_w, upright_h)
    stored = upright.transpose(Image.Transpose.ROTATE_90) if orientation == 6 else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    options = {"quality": 90, "exif": exif.tobytes()}
    if icc:
        options["icc_profile"] = icc
    return f.encode(stored, "HEIF", **options)


def with_alpha(width: int, height: int) -> Image.Image:
    """A product shot: opaque left half, fully transparent right half, a soft band between."""
    img = f.photo(width, height, seed=4).convert("RGBA")
    alpha = Image.new("L", (width, height), 255)
    alpha.paste(0, (width // 2, 0, width, height))
    alpha.paste(128, (width * 2 // 5, 0, width // 2, height))
    img.putalpha(alpha)
    return img


def png_alpha(width: int = 1600, height: int = 1200) -> bytes:
    return f.encode(with_alpha(width, height), "PNG")


def webp_alpha(width: int = 800, height: int = 600) -> bytes:
    return f.encode(with_alpha(width, height), "WEBP", quality=90)


def avif_alpha(width: int = 800, height: int = 600) -> bytes:
    return f.encode(with_alpha(width, height), "AVIF", quality=80)


def animated_gif(width: int = 200, height: int = 150) -> bytes:
    """Three frames; the first is red: that is the one every size shows."""
    frames = [Image.new("RGB", (width, height), colour).convert("P")
              for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return f.encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100,
                    loop=0)


def animated_webp(width: int = 200, height: int = 150) -> bytes:
    frames = [Image.new("RGB", (width, height), colour)
              for colour in ((255, 0, 0), (0, 255, 0))]
    return f.encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100,
                    lossless=True)


def apng(width: int = 200, height: int = 150) -> bytes:
    frames = [Image.new("RGBA", (width, height), colour)
              for colour in ((255, 0, 0, 255), (0, 255, 0, 255))]
    return f.encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100)


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img
