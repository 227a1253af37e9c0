"""Two ``huimages serve`` nodes with their own caches on one S3 + CouchDB store.

This is the N-nodes-behind-a-load-balancer setup of the README, with real
gunicorn processes configured only through the historic environment variables.
"""

from __future__ import annotations

import io
import json
import secrets
import time
import urllib.error
import urllib.request

import pytest
from PIL import Image

from .. import imagefactory as f
from ..conftest import LiveServer


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, s3_server, couch_server):
    shared = {
        **s3_server.env,
        "HUIMAGES3BUCKET": s3_server.create_bucket(),
        "HUIMAGESCOUCHSERVER": couch_server.url,
        "HUIMAGES_COUCHDB_NAME": f"huimages_nodes_{secrets.token_hex(4)}",
    }
    servers = [LiveServer(tmp_path_factory.mktemp(f"node{i}") / "data", shared) for i in (1, 2)]
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.stop()


def test_upload_on_one_node_serve_and_delete_across_nodes(nodes, tmp_path):
    one, two = nodes
    original = tmp_path / "bike.jpg"
    original.write_bytes(f.photo_jpeg(900, 600))
    imageid = one.cli("put", "--title", "Red Bike", str(original)).stdout.strip()

    status, body = fetch(f"{two.url}/200x200/{imageid}.jpeg")
    assert status == 200 and Image.open(io.BytesIO(body)).size == (200, 133)
    assert fetch(f"{one.url}/100x100/{imageid}/red-bike.jpeg")[0] == 200
    assert json.loads(two.cli("info", imageid).stdout)["title"] == ["Red Bike"]
    assert (two.data_dir / "cache" / "200x200" / f"{imageid}.jpeg").is_file()
    assert not (one.data_dir / "cache" / "200x200" / f"{imageid}.jpeg").exists()

    one.cli("delete", imageid)
    assert fetch(f"{one.url}/100x100/{imageid}.jpeg")[0] == 404  # deleting purges locally
    assert fetch(f"{two.url}/50x50/{imageid}.jpeg")[0] == 404  # never cached on node two
    cached_on_two = two.data_dir / "cache" / "200x200" / f"{imageid}.jpeg"
    deadline = time.monotonic() + 10  # node two's follower purges its own cache (follower.py)
    while cached_on_two.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not cached_on_two.exists()
    assert fetch(f"{two.url}/200x200/{imageid}.jpeg")[0] == 404
    assert "removed 0 cached file(s)" in two.cli("purge", imageid).stdout  # nothing left
    assert two.cli("info", imageid, check=False).returncode != 0


def test_a_focus_set_on_one_node_moves_the_other_nodes_crops(nodes, tmp_path):
    """The same URL, another crop, on every node within the follower's bound."""
    from ..app.test_focus import red_share, subject_photo

    one, two = nodes
    photo = tmp_path / "bell.jpg"
    photo.write_bytes(subject_photo(1200, 600, (0.12, 0.5)))
    imageid = one.cli("put", str(photo)).stdout.strip()
    url = f"{two.url}/150x150!/{imageid}.jpeg"
    status, found = fetch(url)
    assert status == 200 and red_share(found) > 0.01  # the subject the server found
    assert "crops centre on 0.9, 0.5" in one.cli("focus", imageid, "0.9", "0.5").stdout
    deadline = time.monotonic() + 10
    while red_share(fetch(url)[1]) > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert red_share(fetch(url)[1]) == 0  # node two's crop now centres far right
    one.cli("focus", imageid, "--clear")
    deadline = time.monotonic() + 10
    while red_share(fetch(url)[1]) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert red_share(fetch(url)[1]) > 0.01  # back to the subject the server found
