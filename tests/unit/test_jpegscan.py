import pytest

from huimages_wsgi.errors import InvalidImage
from huimages_wsgi.jpegscan import check_upload_structure, scan_jpeg

from .. import imagefactory as f


def test_structure_of_a_baseline_and_a_progressive_jpeg():
    for data in (f.solid_jpeg(64, 48), f.progressive_jpeg(320, 200)):
        structure = scan_jpeg(data)
        assert structure.end == len(data)
        assert (structure.width, structure.height) in ((64, 48), (320, 200))


def test_padding_after_the_end_marker_is_tolerated():
    data = f.solid_jpeg() + b"\x00" * 64
    assert check_upload_structure(data).end == len(data) - 64


def test_mpf_frames_after_the_primary_image_are_tolerated():
    from PIL import Image

    frames = [Image.new("RGB", (32, 32), "red"), Image.new("RGB", (32, 32), "blue")]
    data = f.encode(frames[0], "MPO", save_all=True, append_images=frames[1:])
    structure = check_upload_structure(data)
    assert structure.is_mpf and structure.end < len(data)


@pytest.mark.parametrize("data", [b"", b"\xff\xd8", b"\xff\xd8\xff\xe0\x00", b"GIF89a....."])
def test_garbage_is_rejected(data):
    with pytest.raises(InvalidImage):
        scan_jpeg(data)


def test_trailing_payload_is_rejected():
    with pytest.raises(InvalidImage, match="polyglot"):
        check_upload_structure(f.solid_jpeg() + b"#!/bin/sh\necho pwned\n")
