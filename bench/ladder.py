"""The resolution ladder of bench/run.py (issue 23): the camera originals every row is
measured on, and how each is generated.

Each original is made once (deterministic, cached in ``bench/results/ladder/``) with
``run.make_photo``'s photo-like content at its own resolution, encoded like a camera:
JPEG 4:2:0, quality 92-95, a camera's EXIF tags (Make, Model, DateTime, orientation 1,
so the pixels are stored as they are shown, portrait ones portrait). Each resolution
appears twice: landscape and baseline, portrait and progressive (not the full cross
product of orientation x encoding, to keep one run of the ladder under ~25 minutes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image


@dataclass(frozen=True)
class Original:
    """One rung: ``name`` as the table shows it, stored size, encoding."""

    name: str
    width: int
    height: int
    progressive: bool
    quality: int

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    def filename(self) -> str:
        kind = "prog" if self.progressive else "base"
        return f"{self.name}-{self.width}x{self.height}-q{self.quality}-{kind}.jpg"


def _rung(name: str, width: int, height: int, quality: int) -> list[Original]:
    """Landscape baseline and portrait progressive of one camera resolution."""
    return [
        Original(f"{name} land base", width, height, False, quality),
        Original(f"{name} port prog", height, width, True, quality),
    ]


LADDER: tuple[Original, ...] = tuple(
    _rung("8MP", 3264, 2448, 95)
    + _rung("12MP", 4032, 3024, 93)
    + _rung("24MP", 6000, 4000, 92)
    + _rung("48MP", 8064, 6048, 92)
    + _rung("pano", 4608, 1976, 94)
)


def ladder_photo(original: Original, directory: Path) -> Path:
    """The original's file, generated once (a 48 MP one takes about 20 s)."""
    import run  # bench/run.py: make_photo

    path = directory / original.filename()
    if path.exists():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    upright = directory / f"{original.width}x{original.height}.content.tmp.jpg"
    if not upright.exists():
        run.make_photo(upright, original.width, original.height)
    with Image.open(upright) as img:
        img.load()
        exif = Image.Exif()
        exif[0x0112] = 1
        exif[0x010F] = "huimages bench"  # Make
        exif[0x0110] = f"camera {original.megapixels:.0f} MP"  # Model
        exif[0x0132] = "2026:12:05 09:00:00"  # DateTime
        tmp = path.with_suffix(".tmp")
        img.save(tmp, "JPEG", quality=original.quality, subsampling="4:2:0",
                 progressive=original.progressive, exif=exif.tobytes())
    os.replace(tmp, path)
    upright.unlink()
    return path
