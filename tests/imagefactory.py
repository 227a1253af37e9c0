"""Real JPEGs made by the tests: orientations, colour modes, profiles, sizes.

Everything is deterministic so a failure can be reproduced byte for byte.
Also a destination that fails the way a full disk does.
"""

from __future__ import annotations

import errno
import io
import random
import struct

from PIL import Image, ImageChops, ImageDraw, ImageFilter

QUADRANT_COLOURS = {"tl": (255, 0, 0), "tr": (0, 255, 0), "bl": (0, 0, 255), "br": (255, 255, 255)}

# inverse of the transpose that EXIF orientation N asks a viewer to apply
_INVERSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def encode(img: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def solid_jpeg(width: int = 64, height: int = 48, colour=(200, 30, 30), **options) -> bytes:
    return encode(Image.new("RGB", (width, height), colour), quality=95, **options)


def quadrants(width: int, height: int) -> Image.Image:
    """Four coloured quadrants: any rotation or mirror is visible."""
    img = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(img)
    half_w, half_h = width // 2, height // 2
    draw.rectangle((0, 0, half_w - 1, half_h - 1), fill=QUADRANT_COLOURS["tl"])
    draw.rectangle((half_w, 0, width - 1, half_h - 1), fill=QUADRANT_COLOURS["tr"])
    draw.rectangle((0, half_h, half_w - 1, height - 1), fill=QUADRANT_COLOURS["bl"])
    draw.rectangle((half_w, half_h, width - 1, height - 1), fill=QUADRANT_COLOURS["br"])
    return img


def oriented_jpeg(orientation: int, upright_w: int = 400, upright_h: int = 200) -> bytes:
    """A JPEG whose pixels are stored so that applying ``orientation`` shows quadrants()."""
    upright = quadrants(upright_w, upright_h)
    stored = upright.transpose(_INVERSE[orientation]) if orientation in _INVERSE else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "huimages test camera"
    return encode(stored, quality=95, exif=exif.tobytes())


def photo(width: int, height: int, seed: int = 1) -> Image.Image:
    """Photo-like content (gradients, texture, edges) so JPEG sizes are realistic."""
    red = Image.linear_gradient("L").resize((width, height))
    green = Image.radial_gradient("L").resize((width, height))
    small = (width // 4 + 1, height // 4 + 1)  # seeded: Image.effect_noise uses C's rand()
    rng = random.Random(seed)
    levels = bytes(min(255, max(0, round(rng.gauss(128, 40 + seed)))) for _ in range(4096))
    grain = bytes(rng.choices(levels, k=small[0] * small[1]))  # as effect_noise: Gaussian
    noise = Image.frombytes("L", small, grain).resize((width, height))
    blue = noise.filter(ImageFilter.GaussianBlur(2))
    img = Image.merge("RGB", (red, green, blue))
    draw = ImageDraw.Draw(img)
    for i in range(12):
        x = (seed * 97 + i * 131) % width
        y = (seed * 53 + i * 71) % height
        draw.ellipse((x, y, x + width // 8, y + height // 8), outline=(255, 255, 255), width=3)
    return img


def photo_jpeg(width: int = 1600, height: int = 1200, seed: int = 1, **options) -> bytes:
    options.setdefault("quality", 90)
    return encode(photo(width, height, seed), **options)


def cmyk_jpeg(width: int = 120, height: int = 80) -> bytes:
    """Pure CMYK red (C=0 M=100 Y=100 K=0)."""
    return encode(Image.new("CMYK", (width, height), (0, 255, 255, 0)), quality=95)


# CMYK ink per quadrant (Pillow's convention: 255 is full ink) and the RGB it must look like;
# the grey quadrant is black ink only, so the K channel is checked too.
CMYK_QUADRANTS = {
    "tl": ((0, 255, 255, 0), (255, 0, 0)),
    "tr": ((255, 0, 255, 0), (0, 255, 0)),
    "bl": ((255, 255, 0, 0), (0, 0, 255)),
    "br": ((0, 0, 0, 128), (127, 127, 127)),
}


def cmyk_quadrants(width: int, height: int) -> Image.Image:
    """Four CMYK quadrants (``CMYK_QUADRANTS``): a channel mix-up changes a colour."""
    img = Image.new("CMYK", (width, height))
    draw = ImageDraw.Draw(img)
    half_w, half_h = width // 2, height // 2
    boxes = {
        "tl": (0, 0, half_w - 1, half_h - 1),
        "tr": (half_w, 0, width - 1, half_h - 1),
        "bl": (0, half_h, half_w - 1, height - 1),
        "br": (half_w, half_h, width - 1, height - 1),
    }
    for name, (ink, _) in CMYK_QUADRANTS.items():
        draw.rectangle(boxes[name], fill=ink)
    return img


def ycck_encode(cmyk: Image.Image, quality: int = 95) -> bytes:
    """``cmyk`` as an Adobe YCCK JPEG (APP14 transform 2), the bytes libjpeg would write.

    Pillow writes CMYK JPEGs only (transform 0), storing each band inverted
    (Adobe's convention: 255 is no ink). libjpeg's YCCK is the YCbCr of
    255 minus those stored C, M, Y bands, i.e. of Pillow's own C, M, Y,
    with the stored K beside it. So: YCbCr-convert C, M, Y, hand those
    bands pre-inverted (Pillow inverts them back) with K to Pillow's CMYK
    writer, then say YCCK in the Adobe marker and number the components
    1 to 4 as libjpeg does. Decoders convert YCCK back only because of the
    transform flag: the same bytes marked transform 0 show wrong colours.
    """
    cyan, magenta, yellow, black = cmyk.split()
    ycc = Image.merge("RGB", (cyan, magenta, yellow)).convert("YCbCr")
    bands = [ImageChops.invert(band) for band in ycc.split()]
    data = bytearray(encode(Image.merge("CMYK", (*bands, black)), quality=quality))
    pos = 2
    while True:  # baseline: one SOF0 and one interleaved scan of all four components
        marker, body = data[pos + 1], pos + 4
        length = int.from_bytes(data[pos + 2 : body], "big")
        if marker == 0xEE and data[body : body + 5] == b"Adobe":
            data[body + 11] = 2  # transform: 0 = CMYK, 2 = YCCK
        elif marker == 0xC0:
            for i in range(4):
                data[body + 6 + 3 * i] = i + 1  # component IDs: C M Y K -> 1 2 3 4
        elif marker == 0xDA:
            for i in range(4):
                data[body + 1 + 2 * i] = i + 1
            return bytes(data)
        pos += 2 + length


def ycck_jpeg(width: int = 120, height: int = 80) -> bytes:
    """``cmyk_quadrants`` as a YCCK JPEG (Photoshop's usual CMYK JPEG)."""
    return ycck_encode(cmyk_quadrants(width, height))


def grayscale_jpeg(width: int = 120, height: int = 80, level: int = 128) -> bytes:
    return encode(Image.new("L", (width, height), level), quality=95)


def progressive_jpeg(width: int = 640, height: int = 480) -> bytes:
    return encode(photo(width, height, seed=3), quality=85, progressive=True)


def bmp_image(width: int = 60, height: int = 40) -> bytes:
    return encode(Image.new("RGB", (width, height), (0, 0, 255)), "BMP")


def tga_image(width: int = 60, height: int = 40) -> bytes:
    """An image Pillow reads but uploads do not take (huImages took it; nobody sends it)."""
    return encode(Image.new("RGB", (width, height), (0, 0, 255)), "TGA")


def palette_png(width: int = 60, height: int = 40) -> bytes:
    img = Image.new("P", (width, height))
    img.putpalette([0, 0, 255] + [0] * 765)
    return encode(img, "PNG")


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz_tag(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15(x) + _s15(y) + _s15(z)


def _desc_tag(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\0"
    body = b"desc\0\0\0\0" + struct.pack(">I", len(ascii_text)) + ascii_text
    body += b"\0" * 8 + b"\0\0\0" + b"\0" * 67  # empty unicode and scriptcode parts
    return body


def swapped_primaries_profile() -> bytes:
    """An RGB matrix/TRC ICC v2 profile whose red and green colorants are swapped.

    An image tagged with it that stores pure red must come out *green* in
    sRGB: that makes "the embedded profile is honoured" a visible property.
    """
    srgb_r, srgb_g, srgb_b = (
        (0.4361, 0.2225, 0.0139),
        (0.3851, 0.7169, 0.0971),
        (0.1431, 0.0606, 0.7141),
    )
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, int(2.2 * 256)) + b"\0\0"
    tags = [
        (b"desc", _desc_tag("huimages swapped red/green test profile")),
        (b"wtpt", _xyz_tag(0.9642, 1.0, 0.8249)),
        (b"rXYZ", _xyz_tag(*srgb_g)),
        (b"gXYZ", _xyz_tag(*srgb_r)),
        (b"bXYZ", _xyz_tag(*srgb_b)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
        (b"cprt", b"text\0\0\0\0public domain\0\0\0"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        while (offset + len(data)) % 4:
            data += b"\0"
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    total = offset + len(data)
    header = struct.pack(">I", total) + b"lcms" + struct.pack(">I", 0x02100000)
    header += b"mntrRGB XYZ " + struct.pack(">6H", 2026, 1, 1, 0, 0, 0) + b"acsp"
    header += b"\0" * 4 + b"\0" * 4 + b"\0" * 8 + b"\0" * 8 + struct.pack(">I", 0)
    header += _s15(0.9642) + _s15(1.0) + _s15(0.8249) + b"\0" * 4 + b"\0" * 16 + b"\0" * 28
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


def icc_tagged_red_jpeg(width: int = 80, height: int = 60) -> bytes:
    return encode(
        Image.new("RGB", (width, height), (255, 0, 0)),
        quality=95,
        icc_profile=swapped_primaries_profile(),
    )


def mean_colour(img: Image.Image, box: tuple[int, int, int, int] | None = None) -> tuple[int, ...]:
    region = img.convert("RGB").crop(box) if box else img.convert("RGB")
    small = region.resize((1, 1), Image.Resampling.BOX)
    return small.getpixel((0, 0))


def declared_size_jpeg(width: int, height: int) -> bytes:
    """A tiny, well-formed JPEG whose frame header claims ``width`` x ``height``.

    The shape of a decompression bomb: a few hundred bytes that would need
    gigabytes if a decoder believed the header and allocated the bitmap.
    """
    data = bytearray(solid_jpeg(16, 16))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


class FullDisk(io.RawIOBase):
    """A writable file whose every write fails with ENOSPC, as on a full disk.

    Wrapped in ``io.BufferedWriter`` like a real file, small outputs fail at
    the flush (when Pillow finishes or the file is closed), large ones earlier.
    """

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


# -- hostile files: small on disk, costly to decode (tests/app/test_decode_bounds.py) -----


def many_scans_jpeg(width: int = 64, height: int = 48, repeats: int = 1000) -> bytes:
    """A progressive JPEG whose last scan is repeated ``repeats`` times before its end
    marker: libjpeg decodes every copy again, each a pass over the whole image. The
    picture is flat, so each copy is small (8000x8000 and 1000 copies: about 300 KB)."""
    data = encode(Image.new("RGB", (width, height), (90, 120, 200)), quality=85,
                  progressive=True)
    last = data.rindex(b"\xff\xda")  # the last SOS: the scan's header, then its data
    end = len(data) - 2  # the EOI
    assert data[end:] == b"\xff\xd9"
    return data[:end] + data[last:end] * repeats + data[end:]


def webp_vp8l_header(width: int, height: int) -> bytes:
    """A lossless WebP of a few bytes declaring ``width`` x ``height`` (at most 16384)."""
    bits = (width - 1) | ((height - 1) << 14)
    payload = b"\x2f" + struct.pack("<I", bits) + b"\x00" * 5
    chunk = b"VP8L" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def huge_canvas_webp(width: int, height: int) -> bytes:
    """A valid animated WebP of two 1x1 frames on a ``width`` x ``height`` canvas."""
    frames = [Image.new("RGBA", (1, 1), (255, 0, 0, 255)), Image.new("RGBA", (1, 1))]
    data = bytearray(encode(frames[0], "WEBP", save_all=True, append_images=frames[1:],
                            lossless=True))
    vp8x = data.index(b"VP8X")  # chunk header, then 4 bytes of flags, then the canvas
    data[vp8x + 12 : vp8x + 18] = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(
        3, "little")
    return bytes(data)


def huge_canvas_gif(width: int, height: int, frames: int = 1) -> bytes:
    """A GIF of ``frames`` 1x1 frames on a ``width`` x ``height`` logical screen."""
    out = b"GIF89a" + struct.pack("<HH", width, height) + b"\x80\x00\x00" + b"\0\0\0\xff\xff\xff"
    frame = (b"\x21\xf9\x04\x00\x00\x00\x00\x00"  # a graphic control extension, then the image
             + b"\x2c" + struct.pack("<HHHH", 0, 0, 1, 1) + b"\x00" + b"\x02\x02\x44\x01\x00")
    return out + frame * frames + b"\x3b"


def huge_canvas_heic(width: int, height: int) -> bytes:
    """A small HEIC whose image spatial extent (``ispe``) declares ``width`` x ``height``."""
    data = bytearray(encode(Image.new("RGB", (64, 64), (200, 30, 30)), "HEIF", quality=50))
    ispe = data.index(b"ispe")  # box type, then version and flags, then width and height
    data[ispe + 8 : ispe + 16] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    return bytes(data)


def deep_heic(width: int, height: int) -> bytes:
    """A 10-bit HEIC of ``photo``'s pixels (pillow-heif writes 16-bit input as 10 bits)."""
    import array

    import pillow_heif

    pixels = photo(width, height, seed=2)
    samples = array.array("H", (value << 8 for value in pixels.tobytes()))
    heif = pillow_heif.from_bytes(mode="RGB;16", size=pixels.size, data=samples.tobytes())
    out = io.BytesIO()
    heif.save(out, quality=60)
    return out.getvalue()
