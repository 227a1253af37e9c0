"""The browse page in real headless Chromium against a real ``huimages serve``.

Debian's ``chromium`` (scripts/install-services) driven by Playwright's Python
API; Playwright's own browser downloads are never used. Runs on the embedded
default (browse on by default, browsing and uploads from this machine without a
token) and on SeaweedFS S3 + pouchdb-server (browse switched on, the token typed
into the page's token form first, from this machine too).
"""

from __future__ import annotations

import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from .. import imagefactory as f
from ..conftest import LiveServer

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TOKEN = "e2e-" + secrets.token_hex(8)
DETAIL_URL = re.compile(r".*/_browse/([A-Z0-9]{34})$")


def launch_chromium(playwright) -> Browser:
    """Debian's chromium, or a failure that says how to get it (never a skip)."""
    path = shutil.which("chromium") or CHROMIUM
    assert Path(path).exists(), "Debian chromium is missing: run scripts/install-services"
    return playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module", params=["embedded", "s3+couch"])
def site(request, tmp_path_factory) -> Iterator[tuple[LiveServer, str | None]]:
    """A running server and the upload token its form wants (None: none needed)."""
    env: dict[str, str] = {}
    token = None
    if request.param == "s3+couch":
        s3 = request.getfixturevalue("s3_server")
        couch = request.getfixturevalue("couch_server")
        token = TOKEN
        env = {
            **s3.env,
            "HUIMAGES3BUCKET": s3.create_bucket(),
            "HUIMAGESCOUCHSERVER": couch.url,
            "HUIMAGES_COUCHDB_NAME": f"huimages_browse_{secrets.token_hex(4)}",
            "HUIMAGES_BROWSE": "1",  # off by default on shared backends
            "HUIMAGES_UPLOAD_TOKEN": token,
        }
    server = LiveServer(tmp_path_factory.mktemp(f"browse-{request.param}") / "data", env)
    server.start()
    yield server, token
    server.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    yield context.new_page()
    context.close()


def loaded(page: Page, selector: str) -> dict:
    """Wait until the image has really been decoded, then report what was shown."""
    page.wait_for_function(
        "s => { const i = document.querySelector(s); return i?.complete && i.naturalWidth > 0 }",
        arg=selector,
    )
    return page.eval_on_selector(
        selector, "i => ({w: i.naturalWidth, h: i.naturalHeight, src: i.currentSrc})"
    )


def sign_in(page: Page, token: str) -> int:
    """Type ``token`` into the token form; the status of the form's answer."""
    page.fill("#login input[name=token]", token)
    with page.expect_response(lambda r: r.url.endswith("/_browse/login")) as answer:
        page.click("#login button[type=submit]")
    page.wait_for_load_state()
    return answer.value.status


def open_index(page: Page, server: LiveServer, token: str | None) -> None:
    """The index, through the token form where the server has a token."""
    answer = page.goto(f"{server.url}/_browse/")
    if token:
        assert answer.status == 401 and page.locator("#upload").count() == 0
        assert "No images" not in page.inner_text("main")  # nothing shown before the token
        assert sign_in(page, token) == 303
        assert page.url == f"{server.url}/_browse/"
    else:
        assert answer.status == 200


def upload_through_form(page: Page, path: Path, title: str) -> str:
    page.set_input_files("#upload input[name=file]", str(path))
    page.fill("#upload input[name=title]", title)
    with page.expect_navigation():
        page.click("#upload button[type=submit]")
    match = DETAIL_URL.match(page.url)
    assert match, (page.url, page.content()[:2000])
    return match.group(1)


def test_upload_see_thumbnail_and_navigate(site, page, tmp_path):
    server, token = site
    index = f"{server.url}/_browse/"
    open_index(page, server, token)
    assert "No images yet" in page.inner_text("main")
    assert page.locator("#upload input[name=token]").count() == 0

    red = tmp_path / "red-bike.jpg"
    red.write_bytes(f.photo_jpeg(1200, 800, seed=3))
    first = upload_through_form(page, red, "Red Bike")
    assert page.inner_text("h2") == "Red Bike"
    shown = loaded(page, "#image")
    assert (shown["w"], shown["h"]) == (800, 533)  # svga box, from the <picture>
    assert shown["src"].endswith(".avif")  # Chromium takes the first source it decodes

    page.goto(index)
    thumb = loaded(page, f'a.thumb[href="{first}"] img')
    assert (thumb["w"], thumb["h"]) == (150, 150)

    blue = tmp_path / "blue-sky.jpg"
    blue.write_bytes(f.photo_jpeg(900, 1200, seed=11))
    second = upload_through_form(page, blue, "Blue Sky")
    low, high = sorted([first, second])

    page.goto(f"{index}{low}")
    with page.expect_navigation():
        page.click("#next")
    assert page.url.endswith(f"/_browse/{high}")
    loaded(page, "#image")
    with page.expect_navigation():
        page.click("#prev")
    assert page.url.endswith(f"/_browse/{low}")
    assert page.locator("#prev").count() == 0  # the first image has no previous one
    with page.expect_navigation():
        page.click("#random")
    assert DETAIL_URL.match(page.url).group(1) in (first, second)

    page.goto(index)
    for imageid in (first, second):
        loaded(page, f'a.thumb[href="{imageid}"] img')
    page.screenshot(path=str(tmp_path / "browse.png"))


def test_a_bad_upload_shows_why(site, page, tmp_path):
    server, token = site
    if token:  # a wrong token first: its 403 and why, and still no page
        page.goto(f"{server.url}/_browse/")
        assert sign_in(page, "not-the-token-0123456789") == 403
        assert "token" in page.inner_text("p.error")
        assert page.locator("#upload").count() == 0
    open_index(page, server, token)
    not_jpeg = tmp_path / "drawing.tga"
    not_jpeg.write_bytes(f.tga_image())
    page.set_input_files("#upload input[name=file]", str(not_jpeg))
    with page.expect_response(lambda r: r.url.endswith("/_browse/upload")) as answer:
        page.click("#upload button[type=submit]")
    assert answer.value.status == 415
    page.wait_for_selector("p.error")
    assert "GIF, TIFF or BMP originals" in page.inner_text("p.error")
