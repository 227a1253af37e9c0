"""The browse page's focus form: the image once more, and a click sets where crops centre.

Usage (browse.py, on an image's page and for the form's post)::

    focus_form(store, imageid, doc, base_url="..")     # the form's HTML
    set_focus_by_click(store, imageid, body)           # the post's body: at.x=..&at.y=..

The form is an ``<input type="image">``: a browser posts where it was clicked,
in pixels of the image shown, with no script. Who may post is the browse
page's rule, checked before the body is read (browse.py).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from ..core.errors import HuImagesError, RequestRefused
from ..store.focus import set_focus
from ..store.metadata import focus_point

FOCUS_SIZE = "320x320"  # the form's image


def focus_form(store: Any, imageid: str, doc: dict[str, Any], base_url: str) -> str:
    """The image at ``FOCUS_SIZE`` as a form that posts to ``<ID>/focus``; "" where that
    size is not allowed here."""
    try:
        url = store.links.url_for(imageid, store.sizes.parse(FOCUS_SIZE), "jpeg",
                                  base_url=base_url)
    except HuImagesError:
        return ""
    width, height = store.links.reading(doc).scaled_dimensions(imageid, FOCUS_SIZE)
    if not width or not height:
        return ""
    point, found = focus_point(doc, auto=False), focus_point(doc)
    now = (f" (now {point[0]:.2f}, {point[1]:.2f})" if point else
           f" (now {found[0]:.2f}, {found[1]:.2f}, found by the server)" if found else
           " (now the middle)")
    return (f'<form id="focus" method="post" action="{imageid}/focus">'
            f'<p class="note">Click where its crops should centre{now}:</p>'
            f'<input type="image" name="at" src="{url}" width="{width}" height="{height}"'
            ' alt="where crops centre"></form>')


def set_focus_by_click(store: Any, imageid: str, body: bytes) -> None:
    """Centre the crops where the form's image was clicked (``at.x``, ``at.y``, pixels of
    the image shown); a 400 for a post that says no point."""
    fields = parse_qs(body.decode("latin-1"))
    store.get_imagedoc(imageid)  # a 404 for an image that is not there
    width, height = store.scaled_dimensions(imageid, FOCUS_SIZE)
    try:
        x, y = float(fields["at.x"][0]) / width, float(fields["at.y"][0]) / height
    except (KeyError, IndexError, ValueError, TypeError, ZeroDivisionError):
        raise RequestRefused(400, "click on the image to set where crops centre") from None
    set_focus(store, imageid, min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0))
