"""End to end against the real thing: ``huimages serve`` (gunicorn) on loopback."""

import io
import urllib.error
import urllib.request

import pytest
from PIL import Image

from .. import imagefactory as f
from ..processes import environment_of, process_tree


def fetch(url, method="GET", headers=None):
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.fixture(scope="module")
def uploaded(live_server, tmp_path_factory, photo_8mp):
    folder = tmp_path_factory.mktemp("uploads")
    originals = {
        "photo8mp": photo_8mp,
        "cmyk": f.cmyk_jpeg(),
        "gray": f.grayscale_jpeg(),
        "progressive": f.progressive_jpeg(),
        **{f"orient{o}": f.oriented_jpeg(o, 300, 150) for o in (1, 3, 6, 8)},
    }
    paths = []
    for name, data in originals.items():
        path = folder / f"{name}.jpg"
        path.write_bytes(data)
        paths.append(str(path))
    result = live_server.cli("put", "--title", "Test Image", *paths)
    ids = result.stdout.split()
    assert len(ids) == len(originals)
    return dict(zip(originals, ids, strict=True))


def test_upload_then_every_size_kind(live_server, uploaded):
    imageid = uploaded["photo8mp"]
    for size, expected in (
        ("o", (3500, 2400)),
        ("240x160", (233, 160)),
        ("75x75!", (75, 75)),
        ("square", (75, 75)),
        ("1024x768", (1024, 702)),
    ):
        status, headers, body = fetch(f"{live_server.url}/{size}/{imageid}.jpeg")
        assert status == 200, body
        assert headers["Content-Type"] == "image/jpeg"
        assert Image.open(io.BytesIO(body)).size == expected
        assert headers["Cache-Control"] == "public, max-age=31536000, immutable"


def test_seo_url_and_client_predictions_match_the_server(live_server, uploaded):
    for name, imageid in uploaded.items():
        url = live_server.cli("url", imageid, "--size", "240x160").stdout.strip()
        assert url.endswith(f"/240x160/{imageid}/test-image.jpeg")
        status, _, body = fetch(url)
        assert status == 200, name
        info = live_server.cli("info", imageid).stdout
        import json

        doc = json.loads(info)
        from huimages_wsgi.core.geometry import scaled_dimensions
        from huimages_wsgi.core.sizes import parse_size

        assert Image.open(io.BytesIO(body)).size == scaled_dimensions(
            doc["width"], doc["height"], parse_size("240x160")
        ), name


def test_colour_modes_come_out_rgb(live_server, uploaded):
    for name in ("cmyk", "gray", "progressive", "orient6"):
        status, _, body = fetch(f"{live_server.url}/50x50!/{uploaded[name]}.jpeg")
        img = Image.open(io.BytesIO(body))
        assert status == 200 and img.mode == "RGB" and img.size == (50, 50)


def test_conditional_head_and_errors(live_server, uploaded):
    url = f"{live_server.url}/100x100/{uploaded['orient1']}.jpeg"
    status, headers, body = fetch(url)
    assert status == 200
    assert "ETag" not in headers  # Last-Modified is the one validator
    assert fetch(url, headers={"If-Modified-Since": headers["Last-Modified"]})[0] == 304
    head_status, head_headers, head_body = fetch(url, method="HEAD")
    assert head_status == 200 and head_body == b""
    assert head_headers["Content-Length"] == headers["Content-Length"] == str(len(body))
    assert fetch(f"{live_server.url}/100x100/{'A' * 32}01.jpeg")[0] == 404
    assert fetch(f"{live_server.url}/100xx100/{uploaded['orient1']}.jpeg")[0] == 400
    assert fetch(url, method="POST")[0] == 405
    assert fetch(url, method="DELETE")[0] == 405


def test_delete_makes_every_size_404(live_server, uploaded):
    imageid = uploaded["orient3"]
    assert fetch(f"{live_server.url}/60x60/{imageid}.jpeg")[0] == 200
    live_server.cli("delete", imageid)
    for size in ("60x60", "70x70", "o"):
        assert fetch(f"{live_server.url}/{size}/{imageid}.jpeg")[0] == 404


@pytest.mark.parametrize("preset", [{}, {"PILLOW_BLOCKS_MAX": "0"}])
def test_the_server_and_its_workers_run_with_pillows_block_cache(tmp_path, preset):
    """deploy/pillowblocks.py: ``huimages serve`` starts itself again (the same process)
    with Pillow's documented block-cache variables, so the workers it forks import
    Pillow with them; either one set already is the operator's choice, and kept alone."""
    from ..conftest import LiveServer

    server = LiveServer(tmp_path / "data")
    server.env = {name: value for name, value in server.env.items()
                  if not name.startswith("PILLOW_")} | preset
    server.start()
    try:
        tree = process_tree(server.process.pid)
        assert len(tree) >= 3  # the master (the same pid after the restart), 2 workers
        expected = preset or {"PILLOW_BLOCKS_MAX": "8", "PILLOW_BLOCK_SIZE": "4m"}
        for pid in tree:
            seen = environment_of(pid)
            assert {k: v for k, v in seen.items() if k.startswith("PILLOW_")} == expected, pid
        assert fetch(server.url + "/")[0] == 200
    finally:
        server.stop()
