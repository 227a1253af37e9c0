import pytest

from huimages_wsgi.core.errors import InvalidImage
from huimages_wsgi.imaging.jpegscan import jpeg_trailer, scan_jpeg

from .. import imagefactory as f


def test_structure_of_a_baseline_and_a_progressive_jpeg():
    for data in (f.solid_jpeg(64, 48), f.progressive_jpeg(320, 200)):
        structure = scan_jpeg(data)
        assert structure.end == len(data)
        assert (structure.width, structure.height) in ((64, 48), (320, 200))


def test_padding_after_the_end_marker_is_described_as_padding():
    data = f.solid_jpeg() + b"\x00" * 64
    structure, trailer = jpeg_trailer(data)
    assert structure.end == len(data) - 64
    assert trailer == {"bytes": 64, "kind": "padding"}


def test_mpf_frames_after_the_primary_image_are_tolerated():
    from PIL import Image

    frames = [Image.new("RGB", (32, 32), "red"), Image.new("RGB", (32, 32), "blue")]
    data = f.encode(frames[0], "MPO", save_all=True, append_images=frames[1:])
    structure, trailer = jpeg_trailer(data)
    assert structure.is_mpf and structure.end < len(data)
    assert trailer == {"bytes": len(data) - structure.end, "kind": "mpf"}


@pytest.mark.parametrize("data", [b"", b"\xff\xd8", b"\xff\xd8\xff\xe0\x00", b"GIF89a....."])
def test_garbage_is_rejected(data):
    with pytest.raises(InvalidImage):
        scan_jpeg(data)


def test_a_trailing_payload_is_kept_and_called_unknown():
    """Refused once as a polyglot; now kept (o is served inert) and described."""
    payload = b"#!/bin/sh\necho pwned\n"
    structure, trailer = jpeg_trailer(f.solid_jpeg() + payload)
    assert trailer == {"bytes": len(payload), "kind": "unknown"}
