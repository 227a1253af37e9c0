"""16-bit, 32-bit and float greys (TIFF, 16-bit PNG) shown as viewers show them
(imaging/pixels.py ``eight_bit``), not clipped to white."""

from __future__ import annotations

from PIL import Image

from huimages_wsgi.imaging.pixels import _declared_bits, eight_bit


def grey(mode: str, *values: float) -> Image.Image:
    img = Image.new(mode, (len(values), 1))
    for x, value in enumerate(values):
        img.putpixel((x, 0), value)
    return img


def pixels(img: Image.Image) -> list[int]:
    return [img.getpixel((x, 0)) for x in range(img.width)]


def test_16_bit_by_its_declared_depth():
    assert pixels(eight_bit(grey("I;16", 0, 32896, 65535))) == [0, 128, 255]
    scan = grey("I;16", 0, 2048, 4095)
    scan.tag_v2 = {258: (12,)}  # a 12-bit scanner's BitsPerSample
    assert _declared_bits(scan) == 12
    assert pixels(eight_bit(scan)) == [0, 128, 255]


def test_plain_integers_and_floats_by_the_range_they_use():
    assert pixels(eight_bit(grey("I", 0, 128, 255))) == [0, 128, 255]
    assert pixels(eight_bit(grey("I", 0, 65535))) == [0, 255]
    assert pixels(eight_bit(grey("I", -1000, 0, 1000))) == [0, 128, 255]  # signed
    assert pixels(eight_bit(grey("F", 0.0, 0.5, 1.0))) == [0, 128, 255]
    assert pixels(eight_bit(grey("F", 0.0, 255.0))) == [0, 255]
    assert pixels(eight_bit(grey("F", 0.5, float("inf")))) == [128, 255]  # clipped
    assert eight_bit(grey("I", 7, 7)).mode == "L"
