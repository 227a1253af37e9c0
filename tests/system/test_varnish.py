"""Behind a shared cache: Varnish with contrib/varnish/huimages.vcl in front of the
rendered nginx and lighttpd configurations, each in front of ``huimages fcgi``.

What a CDN needs from an image server, checked for real:

* a delete reaches the shared cache: the node's follower sees it in the change
  feed and sends ``PURGE`` with the image's key (HUIMAGES_PURGE), so every
  size, format, SEO name and ``o/`` of the image is a 404 through Varnish
  within seconds, not a year;
* an outage is never cached: a miss while the app is down is a 503 that
  Varnish does not keep, and the same URL works once the app is back;
* SEO names and stray query strings share one cached copy;
* validators agree: the Last-Modified one front gives is a 304 at any other
  front of another node;
* no answer of any front has an error-level problem for REDbot.

Varnish and the webservers are Debian's (scripts/install-services); a missing
one fails these tests.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .. import imagefactory
from ..docs import REPO, ShellServer, doc_block, run_sh, shell_env, substituted
from ..services import VarnishServer
from ..webservers import HUIMAGES, free_port, http_get, make_base_dir, remove_base_dir
from .test_deployment import Originals, Stack, get_from, start_stack, stop_stack
from .test_docs import eventually, fetch

pytestmark = [pytest.mark.webserver, pytest.mark.services]

REDBOT = Path(HUIMAGES).parent / "redbot"


@pytest.fixture(scope="module")
def data() -> Iterator[Originals]:
    base = make_base_dir("huimages-varnish-")
    try:
        data_dir = base / "data"
        yield Originals(base, data_dir, put(data_dir, seed=1))
    finally:
        remove_base_dir(base)


def put(data_dir: Path, seed: int, title: str = "Red bike") -> str:
    photo = data_dir.parent / f"photo-{seed}.jpg"
    photo.write_bytes(imagefactory.photo_jpeg(900, 600, seed=seed))
    result = subprocess.run([str(HUIMAGES), "--data-dir", str(data_dir), "put", "--title",
                             title, str(photo)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


class Fronted:
    """A node (webserver + ``huimages fcgi`` with its follower) with Varnish in front."""

    def __init__(self, data: Originals, kind: str) -> None:
        varnish_port = free_port()
        self.stack: Stack = start_stack(
            data, f"varnish-{kind}", kind, "socket", False, secret=None,
            HUIMAGES_PURGE=f"xkey+http://127.0.0.1:{varnish_port}",
            HUIMAGES_FOLLOW_HEARTBEAT="1")
        self.varnish = VarnishServer(data.base / f"varnish-{kind}", self.stack.server.port,
                                     port=varnish_port)
        try:
            self.varnish.start()
        except BaseException:
            stop_stack(self.stack)
            raise

    def get(self, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        return http_get(self.varnish.ports["http"], path, headers=headers)

    def stop(self) -> None:
        self.varnish.stop()
        stop_stack(self.stack)


@pytest.fixture(scope="module", params=["nginx", "lighttpd"])
def fronted(request, data) -> Iterator[Fronted]:
    node = Fronted(data, request.param)
    yield node
    node.stop()


def image_urls(imageid: str) -> list[str]:
    return [f"/240x160/{imageid}.jpeg", f"/100x100!/{imageid}.webp",
            f"/240x160/{imageid}/red-bike.jpeg", f"/o/{imageid}.jpeg",
            f"/o/{imageid}/holiday.jpeg"]


def test_a_delete_leaves_the_shared_cache_within_seconds(fronted, data):
    imageid = put(data.data_dir, seed=2)
    for path in image_urls(imageid):
        status, _, body = fronted.get(path)
        assert status == 200, (path, status, body[:200], fronted.stack.logs())
        status, headers, _ = fronted.get(path)
        assert status == 200 and headers["x-cache"] == "HIT", (path, headers)
    fronted.stack.backend.stop()  # the shared cache answers alone now
    assert all(fronted.get(path)[0] == 200 for path in image_urls(imageid))
    fronted.stack.backend.start()

    started = time.monotonic()
    deleted = subprocess.run([str(HUIMAGES), "--data-dir", str(data.data_dir), "delete",
                              imageid], capture_output=True, text=True, timeout=60)
    assert deleted.returncode == 0, deleted.stderr
    left = image_urls(imageid)
    while left and time.monotonic() - started < 10:
        left = [path for path in left if fronted.get(path)[0] != 404]
        time.sleep(0.2)
    assert not left, (left, fronted.varnish.log_tail(), fronted.stack.logs())
    print(f"{fronted.stack.kind}: every answer of the image is a 404 through Varnish "
          f"{time.monotonic() - started:.1f} s after the delete")

    def purges_counted() -> float:  # the follower counts them at its next beat
        status, _, body = fronted.stack.get("/_metrics")
        assert status == 200
        sent = [line for line in body.decode().splitlines()
                if line.startswith("huimages_follower_shared_purges_total ")]
        return float(sent[0].split()[1]) if sent else 0.0

    deadline = time.monotonic() + 10
    while purges_counted() < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert purges_counted() >= 1


def test_an_outage_is_never_cached(fronted, data):
    path = f"/310x200/{data.imageid}.jpeg"
    fronted.stack.backend.stop()
    try:
        status, headers, _ = fronted.get(path)
        assert status == 503 and headers["retry-after"] == "5", headers
        assert headers["cache-control"] == "no-store"
    finally:
        fronted.stack.backend.start()
    deadline = time.monotonic() + 10  # lighttpd keeps a failed backend off for ~1 s
    while (status := fronted.get(path)[0]) != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == 200


def test_names_and_query_strings_share_one_cached_copy(fronted, data):
    names = [f"/320x200/{data.imageid}/name-{n}.jpeg" for n in range(6)]
    names += [f"/320x200/{data.imageid}.jpeg?utm_source={n}" for n in range(3)]
    answers = [fronted.get(path) for path in names]
    assert [status for status, _, _ in answers] == [200] * len(names)
    assert [headers["x-cache"] for _, headers, _ in answers] == ["MISS"] + ["HIT"] * (
        len(names) - 1)
    assert len({body for _, _, body in answers}) == 1
    canonical = f'</320x200/{data.imageid}.jpeg>; rel="canonical"'
    assert all(headers["link"] == canonical for _, headers, _ in answers[:6])
    assert "xkey" not in answers[0][1]  # the purge key stays inside the cache
    status, headers, _ = fronted.get(f"/320x200/{data.imageid}.jpeg",
                                     **{"huimages-canonical": "https://evil.example/"})
    assert status == 200 and "link" not in headers  # a client cannot make one up


def test_the_node_state_answers_this_machine_only(fronted):
    assert fronted.get("/_health")[0] in (200, 503)
    for path in ("/_health", "/_metrics", "/%5Fmetrics", "/_metric%73", "//_health",
                 "/%5fhealth?x"):
        status, _, body = get_from(fronted.varnish.ports["http"], path, "127.0.0.2")
        assert status == 403, (path, body)
    status, _, body = get_from(fronted.varnish.ports["http"], "/_browse/", "127.0.0.2")
    assert status == 404, body  # the app's answer (browse is off on this node)
    conn = http.client.HTTPConnection("127.0.0.1", fronted.varnish.ports["http"], timeout=10,
                                      source_address=("127.0.0.2", 0))
    conn.request("PURGE", "/", headers={"xkey-purge": "ANY"})
    assert conn.getresponse().status == 403  # purges from this machine only
    conn.close()


def test_revalidation_at_another_node_and_front_is_a_304(data):
    """Two nodes over one catalog, nginx in front of one and lighttpd of the other: the
    Last-Modified either gives for a variant is a 304 at the other, and at each app."""
    nodes = [start_stack(data, f"revalidate-{kind}", kind, "socket", False, secret=None)
             for kind in ("nginx", "lighttpd")]
    try:
        path = f"/123x123/{data.imageid}.jpeg"
        dates = set()
        for node in nodes:
            for _ in range(2):  # made by the app, then from the webserver's cache
                status, headers, _ = node.get(path)
                assert status == 200 and "etag" not in headers, headers
                dates.add(headers["last-modified"])
        assert len(dates) == 1, dates
        (date,) = dates
        for node in nodes:
            assert node.get(path, headers={"If-Modified-Since": date})[0] == 304
            node.cached("123x123").parent.joinpath(f"{data.imageid}.jpeg").unlink()
            answer = node.get(path, headers={"If-Modified-Since": date})
            assert answer[0] == 304, (node.kind, answer)  # the app
    finally:
        for node in nodes:
            stop_stack(node)


def redbot_problems(url: str) -> list[tuple[int, str, str]]:
    """REDbot's error-level notes (``BAD``) on the answer to a GET of ``url``."""
    result = subprocess.run([str(REDBOT), "-o", "har", url], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    problems = []
    for entry in json.loads(result.stdout)["log"]["entries"]:
        status = entry["response"]["status"]
        problems += [(status, note["note_id"], note["summary"])
                     for note in entry["_red_messages"] if note["level"] == "BAD"]
    return problems


def test_redbot_finds_no_error_on_any_answer(fronted, data):
    """Hits, misses, SEO names, originals, errors of every kind, through Varnish and
    straight from the webserver, and the webserver's 503 while the app is down."""
    imageid = data.imageid
    paths = [f"/200x133/{imageid}.jpeg", f"/200x133/{imageid}.jpeg",
             f"/200x133/{imageid}/red-bike.webp", f"/o/{imageid}.jpeg", f"/o/{imageid}",
             f"/bad-size/{imageid}.jpeg", "/240x160/" + "A" * 32 + "01.jpeg", "/",
             "/_health", "/no-such-page"]
    bases = [fronted.varnish.url, f"http://127.0.0.1:{fronted.stack.server.port}"]
    found = {f"{base}{path}": redbot_problems(f"{base}{path}")
             for base in bases for path in paths}
    fronted.stack.backend.stop()
    try:
        for base in bases:
            found[f"{base} (app down)"] = redbot_problems(f"{base}/201x133/{imageid}.jpeg")
    finally:
        fronted.stack.backend.start()
    assert {url: notes for url, notes in found.items() if notes} == {}


def test_the_documented_varnish_recipe_purges_a_deleted_image(tmp_path):
    """docs/caching.md's blocks as written (ports, paths and the VCL's backend port
    substituted): a delete through the CLI leaves Varnish, and the hand purge answers."""
    base = make_base_dir("huimages-varnish-doc-")
    web, cache = free_port(), free_port()
    try:
        vcl = (REPO / "contrib" / "varnish" / "huimages.vcl").read_text()
        (base / "huimages.vcl").write_text(vcl.replace('"8080"', f'"{web}"'))
        script = substituted(doc_block("caching-varnish"), {
            "/srv/huimages": str(base), "8080": str(web), "6081": str(cache),
            '"$PWD/contrib/varnish/huimages.vcl"': str(base / "huimages.vcl")})
        photo = base / "photo.jpg"
        photo.write_bytes(imagefactory.photo_jpeg(640, 480, seed=11))
        env = shell_env(HUIMAGES_DATA_DIR=str(base))
        imageid = run_sh(f"huimages put {photo}", base, env).stdout.strip()
        server = ShellServer(script, base, shell_env())
        try:
            url = f"http://127.0.0.1:{cache}/120x90/{imageid}.jpeg"
            eventually(lambda: fetch(url)[0] == 200, server)
            assert fetch(url)[1].get("X-Cache") == "HIT"
            run_sh(f"huimages delete {imageid}", base, env)
            eventually(lambda: fetch(url)[0] == 404, server)
            purge = substituted(doc_block("caching-purge"), {
                "$IMAGE_ID": imageid, "6081": str(cache)})
            assert "purged" in run_sh(purge, base, shell_env()).stdout
        finally:
            server.stop()
    finally:
        remove_base_dir(base)
