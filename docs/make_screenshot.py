"""Regenerate docs/browse.png: the browse page with a few images, in headless Chromium.

    .venv/bin/python docs/make_screenshot.py

Starts a throwaway ``huimages serve`` on the embedded default, uploads a few
drawn landscapes with ``huimages put``, and photographs ``/_browse/`` with
Debian's chromium through Playwright, exactly as tests/system/test_browse_e2e.py does.
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import LiveServer  # noqa: E402
from tests.system.test_browse_e2e import launch_chromium  # noqa: E402

SCENES = [  # title, sky top, sky bottom, sun, hills (far to near)
    ("Harbour at dusk", (40, 50, 110), (250, 150, 90), (255, 220, 140),
     [(70, 60, 100), (40, 40, 70), (20, 25, 40)]),
    ("Alpine meadow", (70, 140, 230), (190, 225, 250), (255, 250, 220),
     [(150, 170, 200), (90, 150, 80), (50, 110, 50)]),
    ("Desert road", (110, 170, 230), (240, 220, 180), (255, 255, 230),
     [(210, 160, 110), (190, 120, 70), (140, 80, 50)]),
    ("Northern lights", (10, 20, 40), (30, 120, 100), (220, 255, 230),
     [(20, 40, 50), (15, 30, 35), (5, 10, 15)]),
    ("Lavender field", (120, 160, 220), (250, 210, 200), (255, 240, 200),
     [(140, 120, 180), (120, 90, 170), (90, 60, 140)]),
    ("Autumn forest", (150, 190, 230), (240, 230, 200), (255, 245, 210),
     [(200, 120, 50), (170, 70, 30), (90, 50, 30)]),
    ("Snowy pass", (150, 180, 210), (235, 240, 245), (255, 255, 255),
     [(200, 210, 225), (170, 185, 205), (120, 135, 160)]),
    ("Red bike", (60, 120, 200), (200, 220, 240), (255, 245, 200),
     [(120, 140, 120), (80, 110, 80), (150, 30, 30)]),
]


def landscape(index: int, width: int = 1200, height: int = 800) -> bytes:
    _title, top, bottom, sun, hills = SCENES[index]
    sky = Image.linear_gradient("L").resize((width, height))
    img = Image.composite(Image.new("RGB", (width, height), bottom),
                          Image.new("RGB", (width, height), top), sky)
    draw = ImageDraw.Draw(img)
    cx, cy, r = width * (0.25 + 0.07 * index), height * 0.35, height * 0.09
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=sun)
    for layer, colour in enumerate(hills):
        base = height * (0.55 + 0.13 * layer)
        points = [(0, height)]
        for step in range(13):
            x = width * step / 12
            wave = ((step * (7 + index + layer * 3)) % 5 - 2) * height * 0.03
            points.append((x, base + wave))
        points.append((width, height))
        draw.polygon(points, fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(1.2))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=88)
    return out.getvalue()


def main() -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        server = LiveServer(Path(tmp) / "data", workers=1).start()
        try:
            for index, scene in enumerate(SCENES):
                path = Path(tmp) / f"scene{index}.jpg"
                path.write_bytes(landscape(index))
                server.cli("put", "--title", scene[0], str(path))
            with sync_playwright() as playwright:
                browser = launch_chromium(playwright)
                page = browser.new_page(viewport={"width": 860, "height": 560})
                page.goto(f"{server.url}/_browse/")
                page.wait_for_function(
                    "[...document.images].every(i => i.complete && i.naturalWidth > 0)"
                )
                target = ROOT / "docs" / "browse.png"
                page.screenshot(path=str(target))
                browser.close()
        finally:
            server.stop()
    print(f"wrote {target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
