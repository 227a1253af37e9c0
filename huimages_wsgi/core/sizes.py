"""Parsing of size specifications: ``o``, ``WxH``, ``WxH!`` and preset names.

Only canonical spellings are accepted (no leading zeros, lower-case ``x``),
because the size string is also a cache directory name: two spellings of one
size would cache the same pixels twice and escape the webserver's rewrite.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import InvalidSize, SizeNotAllowed

ORIGINAL = "original"
FIT = "fit"
CROP = "crop"

DEFAULT_PRESETS: Mapping[str, str] = {
    "mini": "23x40",
    "thumb": "50x200",
    "sidebar": "179x600",
    "small": "240x160",
    "medium": "480x320",
    "full": "477x800",
    "vga": "640x480",
    "svga": "800x600",
    "xvga": "1024x768",
    "square": "75x75!",
}

_BOX_RE = re.compile(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})(!?)")
PRESET_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True)
class Size:
    """A parsed size. ``name`` is the spelling used in URLs and cache paths."""

    name: str
    kind: str
    width: int = 0
    height: int = 0

    @property
    def is_original(self) -> bool:
        return self.kind == ORIGINAL

    @property
    def spec(self) -> str:
        """The box this size resolves to (``o`` for the original)."""
        if self.kind == ORIGINAL:
            return "o"
        return f"{self.width}x{self.height}" + ("!" if self.kind == CROP else "")


def _parse_box(text: str) -> tuple[int, int, str] | None:
    match = _BOX_RE.fullmatch(text)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)), CROP if match.group(3) else FIT


def parse_size(text: str, presets: Mapping[str, str] = DEFAULT_PRESETS) -> Size:
    """Parse a size from a URL segment or an API argument.

    Raises InvalidSize with a message naming what is accepted.
    """
    if text == "o":
        return Size("o", ORIGINAL)
    box = _parse_box(text)
    if box is not None:
        return Size(text, box[2], box[0], box[1])
    if isinstance(text, str) and PRESET_NAME_RE.fullmatch(text) and text in presets:
        target = _parse_box(presets[text])
        if target is None:
            raise InvalidSize(f"preset {text!r} has an invalid box {presets[text]!r}")
        return Size(text, target[2], target[0], target[1])
    raise InvalidSize(
        f"invalid size {str(text)[:40]!r}: use 'o', WxH, WxH! or one of "
        + ", ".join(sorted(presets))
    )


def validate_presets(presets: Mapping[str, str]) -> dict[str, str]:
    """Check a preset table once, at configuration time."""
    checked = {}
    for name, box in presets.items():
        if not PRESET_NAME_RE.fullmatch(name) or name == "o":
            raise ValueError(f"invalid preset name {name!r}: use [a-z][a-z0-9_]*")
        if _parse_box(box) is None:
            raise ValueError(f"invalid box {box!r} for preset {name!r}: use WxH or WxH!")
        checked[name] = box
    return checked


class SizeRules:
    """The sizes one configuration serves: presets, the allow-list, the largest box.

    ``parse`` is what every caller uses (URLs, the client API, the CLI), so
    no caller predicts or renders a size the server would refuse. Valid
    answers are memoised (bounded), since every cache hit parses its size.

    A preset on the allow-list admits its box too: URLs name the box
    (``canonical``: ``square`` is built as ``/75x75!/``, one cache file for
    both spellings), so ``HUIMAGES_ALLOWED_SIZES=square`` must serve that URL.
    """

    MEMO_LIMIT = 256

    def __init__(
        self,
        presets: Mapping[str, str] = DEFAULT_PRESETS,
        allowed: frozenset[str] | None = None,
        max_dimension: int = 4096,
    ) -> None:
        if allowed is not None:
            allowed = frozenset(allowed) | {presets[name] for name in allowed if name in presets}
        self.presets, self.allowed, self.max_dimension = presets, allowed, max_dimension
        self._memo: dict[str, Size] = {}

    def parse(self, text: str) -> Size:
        """Parse and apply the limits; InvalidSize or SizeNotAllowed when refused."""
        size = self._memo.get(text)
        if size is not None:
            return size
        size = parse_size(text, self.presets)
        if self.allowed is not None and size.name not in self.allowed and (
            size.spec not in self.allowed
        ):
            raise SizeNotAllowed(f"size {size.name!r} is not in the list of allowed sizes")
        limit = self.max_dimension
        if size.width > limit or size.height > limit:
            raise InvalidSize(f"size {size.name!r} exceeds the maximum of {limit} pixels per side")
        if len(self._memo) < self.MEMO_LIMIT:
            self._memo[text] = size
        return size

    def canonical(self, text: str) -> Size:
        """Presets resolve to their box, so ``square`` and ``75x75!`` share a cache file."""
        return parse_size(self.parse(text).spec, self.presets)
