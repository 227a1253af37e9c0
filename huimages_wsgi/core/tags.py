"""HTML for images: ``<img>``, ``srcset`` and ``<picture>``, every value escaped.

Pure string building; ``ImageStore.scaled_tag`` looks up the URLs and
dimensions and hands them here.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence

#: (URL, density) pairs; the density is 1.0 for the first and only required one.
Candidates = Sequence[tuple[str, float]]


def density_text(density: float) -> str:
    """``2.0`` -> ``2x``, ``1.6667`` -> ``1.67x``."""
    return f"{density:.3g}x"


def srcset_value(candidates: Candidates) -> str:
    """A lone candidate is just its URL; several get their density descriptors."""
    if len(candidates) == 1:
        return candidates[0][0]
    return ", ".join(f"{url} {density_text(density)}" for url, density in candidates)


def img_tag(
    candidates: Candidates,
    width: int | None,
    height: int | None,
    flags: Iterable[str] = (),
    attrs: Mapping[str, object] | None = None,
) -> str:
    """``<img src srcset width height ... />``; the first candidate is ``src``. ``flags``
    (huImages' extra positional arguments, like ``'border="0"'``) go in as they are;
    every attribute value is escaped."""
    parts = [f'<img src="{html.escape(candidates[0][0])}"']
    if len(candidates) > 1:
        parts.append(f'srcset="{html.escape(srcset_value(candidates))}"')
    if width and height:
        parts.append(f'width="{width}" height="{height}"')
    parts.extend(flags)
    parts.extend(f'{html.escape(k)}="{html.escape(str(v))}"' for k, v in (attrs or {}).items())
    parts.append("/>")
    return " ".join(parts)


def picture_tag(sources: Sequence[tuple[str, Candidates]], img: str) -> str:
    """``<picture>`` with one ``<source>`` per (content type, candidates), best first.

    The browser takes the first source whose type it decodes and falls back
    to the ``<img>``, which also carries the size, alt text and attributes.
    """
    parts = [
        f'<source type="{html.escape(content_type)}" '
        f'srcset="{html.escape(srcset_value(candidates))}" />'
        for content_type, candidates in sources
    ]
    return "<picture>" + "".join(parts) + img + "</picture>"
