"""Regenerate docs/focus.png: the same square crop of one photo, centred on the middle
and on the focus the server found, side by side.

    .venv/bin/python docs/make_focus_picture.py

A drawn product shot with its subject (a red bicycle bell) far to the left is
uploaded to a throwaway store; its 240x240! crop is rendered twice, with
HUIMAGES_AUTO_FOCUS off and on, through the same renderer a request uses.
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from huimages_wsgi import Config, ImageStore  # noqa: E402
from huimages_wsgi.core.sizes import parse_size  # noqa: E402


def product_shot(width: int = 1600, height: int = 800) -> bytes:
    """A table top, a soft shadow and a red bell with a chrome dome, far left."""
    img = Image.new("RGB", (width, height), (226, 222, 214))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, height * 0.62, width, height), fill=(188, 160, 128))  # the table
    cx, cy, r = int(width * 0.16), int(height * 0.52), height // 6
    shadow = Image.new("L", (width, height), 0)
    ImageDraw.Draw(shadow).ellipse((cx - r, cy + r * 0.7, cx + r * 1.4, cy + r * 1.1), fill=110)
    img.paste((120, 100, 80), mask=shadow.filter(ImageFilter.GaussianBlur(18)))
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(200, 30, 35))  # the bell
    draw.ellipse((cx - r * 0.55, cy - r * 0.75, cx + r * 0.35, cy - r * 0.1), fill=(235, 235, 240))
    draw.rectangle((cx - r * 0.1, cy + r * 0.8, cx + r * 0.1, cy + r * 1.2), fill=(90, 90, 95))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=92)
    return out.getvalue()


def crop(store: ImageStore, imageid: str) -> Image.Image:
    cached = store.renderer.variant(imageid, parse_size("240x240!", store.config.presets))
    return Image.open(cached.path).convert("RGB")


def main() -> None:
    with tempfile.TemporaryDirectory() as base:
        data = product_shot()
        centre = ImageStore(Config(data_dir=Path(base) / "a", auto_focus=False))
        focus = ImageStore(Config(data_dir=Path(base) / "b"))
        crops = [crop(store, store.save_image(data)) for store in (centre, focus)]
        whole = Image.open(io.BytesIO(data)).convert("RGB")
        whole.thumbnail((480, 240))
    pad, label = 16, 28
    sheet = Image.new("RGB", (whole.width + 2 * 240 + 4 * pad, 240 + label + 2 * pad), "white")
    draw = ImageDraw.Draw(sheet)
    x = pad
    for title, picture in (("original", whole), ("240x240! centred", crops[0]),
                           ("240x240! on the focus", crops[1])):
        sheet.paste(picture, (x, pad + label + (240 - picture.height) // 2))
        draw.text((x, pad), title, fill=(40, 40, 40))
        x += picture.width + pad
    sheet.save(ROOT / "docs" / "focus.png", optimize=True)
    print(f"wrote {ROOT / 'docs' / 'focus.png'}")


if __name__ == "__main__":
    main()
