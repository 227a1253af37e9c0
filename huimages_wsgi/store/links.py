"""URLs, ``<img>`` tags and predicted dimensions of variants: ``Links``.

Pure functions of the configuration and an image's catalog document, so the
local store (imagestore.py) and the HTTP client (httpimagestore.py) share them by
composition: each hands ``Links`` its own way of reading a document. Nothing
here renders, stores or talks HTTP.

Usage::

    links = Links(config, SizeRules(...), catalog.get)
    links.scaled_imageurl(imageid, "240x160", "webp")
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePosixPath

from ..core.config import Config
from ..core.errors import HuImagesError
from ..core.formats import UNAVAILABLE, check_variant, ext_for_type, output_format
from ..core.geometry import high_density_size
from ..core.geometry import scaled_dimensions as geometry_dimensions
from ..core.ids import validate_id
from ..core.signing import sign
from ..core.sizes import CROP, Size, SizeRules
from ..core.tags import img_tag, picture_tag
from ..core.urls import image_path, join_url, slugify
from ..storage import Doc
from ..storage.base import source_dimensions

DocReader = Callable[[str], "Doc | None"]


def newest_title(doc: Doc | None) -> str:
    """The title an image is known by now: the last one added (the browse page's)."""
    titles = (doc or {}).get("title") or []
    if isinstance(titles, str):
        return titles
    return str(titles[-1]) if titles else ""


def first_title(doc: Doc | None) -> str:
    """The title an image was first given: huImages named its URLs and alt text by it."""
    titles = (doc or {}).get("title") or []
    if isinstance(titles, str):
        return titles
    return str(titles[0]) if titles else ""


def file_name(doc: Doc | None) -> str:
    """The name the original was uploaded under; huImages kept it as its attachment's."""
    doc = doc or {}
    name = doc.get("filename")
    if isinstance(name, str) and name:
        return name
    return next(iter(doc.get("_attachments") or {}), "")


def seo_name(doc: Doc | None) -> str:
    """The readable name in an image's URLs (``/<size>/<ID>/<name>.<ext>``).

    Recorded at the image's first save (``seo_name``: the first title, else
    the file's name) and never changed, so adding titles moves no URL; a
    document written before that (huImages') gets the same rule on what it
    holds.
    """
    recorded = (doc or {}).get("seo_name")
    if isinstance(recorded, str):
        return recorded
    return slugify(first_title(doc)) or slugify(PurePosixPath(file_name(doc)).stem)


def alt_text(doc: Doc | None, addition: str) -> str:
    """``alt`` as huImages 2.2 wrote it: the newest title, else the file's name with
    ``_`` as spaces, each followed by ``HUIMAGESALTADDITION`` as it is (it brings its
    own separator); for an image it does not know, the addition alone."""
    text = newest_title(doc) or file_name(doc).replace("_", " ")
    return text + addition if text else addition.strip()


class Links:
    """URL and tag building for one configuration over one way of reading documents."""

    def __init__(self, config: Config, sizes: SizeRules, read_doc: DocReader) -> None:
        self.config, self.sizes, self.read_doc = config, sizes, read_doc

    def reading(self, doc: Doc) -> Links:
        """The same links over one document already read: no catalog read at all."""
        return Links(self.config, self.sizes, lambda imageid: doc)

    def url_for(
        self,
        imageid: str,
        size: Size,
        ext: str = "jpeg",
        title: str = "",
        base_url: str | None = None,
    ) -> str:
        """Signed automatically when a secret is configured.

        ``base_url`` replaces the configured server URL, e.g. ``..`` for URLs
        relative to a page one level below the image root (the browse page).
        """
        secret = self.config.secret
        signature = sign(secret, size.name, imageid, ext) if secret else ""
        path = image_path(imageid, size.name, ext, title, signature)
        return join_url(base_url or self.config.server_url, path)

    def imageurl(self, imageid: str, size: str = "o") -> str:
        """The original's URL ends in the extension of its type: ``/o/<ID>.heic`` for a HEIC."""
        validate_id(imageid)
        parsed = self.sizes.parse(size)
        if not parsed.is_original:
            return self.url_for(imageid, parsed)
        return self.url_for(imageid, parsed, self.original_ext(imageid))

    def original_ext(self, imageid: str, doc: Doc | None = None) -> str:
        """The extension of the original's ``o`` URL, from the catalog's ``contenttype``."""
        if doc is None:
            doc = self.read_doc(validate_id(imageid))
        return ext_for_type((doc or {}).get("contenttype"))

    def served_ext(self, imageid: str, size: Size, ext: str, doc: Doc | None = None) -> str:
        """The extension a variant is asked for at: ``o`` with the default ``jpeg`` is the
        original itself, at its own extension (huImages' ``o`` was any type)."""
        return self.original_ext(imageid, doc) if size.is_original and ext == "jpeg" else ext

    def scaled_imageurl(
        self, imageid: str, size: str = "150x150", ext: str = "jpeg", *, base_url: str | None = None
    ) -> str:
        validate_id(imageid)
        canonical = self.sizes.canonical(size)
        doc = self.read_doc(imageid)
        original = self.original_ext(imageid, doc) if canonical.is_original else None
        ext = self.served_ext(imageid, canonical, ext, doc)
        check_variant(canonical, ext, original)
        return self.url_for(imageid, canonical, ext, seo_name(doc), base_url)

    def scaled_dimensions(
        self, imageid: str, size: str = "150x150"
    ) -> tuple[int | None, int | None]:
        """The size a variant will have, or (None, None) for an image not there.

        The ID and the size are checked as a request for the variant checks
        them (the configured limits and allow-list included), so this never
        predicts a variant the server refuses. A crop is its box: no lookup.
        """
        validate_id(imageid)
        parsed = self.sizes.parse(size)
        doc = None if parsed.kind == CROP else self.read_doc(imageid)
        return self.dimensions(doc, parsed)

    def scaled_tag(
        self,
        imageid: str,
        size: str = "150x150",
        *args: str,
        formats: Sequence[str] = (),
        srcset: bool = False,
        base_url: str | None = None,
        doc: Doc | None = None,
        attrs: Mapping[str, object] | None = None,
        placeholder: bool = False,
        **more_attrs: object,
    ) -> str:
        """An ``<img>`` with width, height and alt, every keyword's value HTML-escaped
        and the positional ``args`` put in as they are (``'border="0"'``), as
        huImages did; ``alt`` defaults to the first title (else the file's name)
        and ``HUIMAGESALTADDITION``.

        ``srcset=True`` adds a high-density candidate: the box doubled, capped
        at what the original can give (so ``1.5x`` for a photo only 1.5 times
        the box, and none for one smaller than the box). ``formats`` (e.g.
        ``("avif", "webp")``, best first) wraps the ``<img>`` in a ``<picture>``
        with one ``<source>`` per format; the ``<img>`` stays JPEG, which every
        browser decodes. One catalog read, whatever the options, or none when
        the caller already holds the image's ``doc``. ``attrs`` takes attributes
        named like an option (the module's ``scaled_tag`` passes every keyword so).
        ``placeholder=True`` paints the image's dominant colour and its tiny copy
        as the ``<img>``'s background until the image arrives.
        """
        attrs = {**(attrs or {}), **more_attrs}
        validate_id(imageid)
        if doc is None:
            doc = self.read_doc(imageid)
        name = seo_name(doc)
        one_x = self.sizes.canonical(size)
        width, height = self.dimensions(doc, one_x)
        sizes = [(one_x, 1.0)]
        if srcset and width and height:
            two_x = self.high_density(doc, one_x)
            if two_x is not None:
                sizes.append((two_x, self.dimensions(doc, two_x)[0] / width))

        def candidates(ext: str) -> list[tuple[str, float]]:
            if one_x.is_original:  # o is the file itself, at its own extension
                ext = ext if ext != "jpeg" else self.original_ext(imageid, doc)
                check_variant(one_x, ext, self.original_ext(imageid, doc))
            else:
                check_variant(one_x, ext)
            return [
                (self.url_for(imageid, variant, ext, name, base_url), density)
                for variant, density in sizes
                if variant is one_x or _fits(variant, ext)
            ]

        attrs.setdefault("alt", alt_text(doc, self.config.alt_addition))
        if placeholder:
            attrs["style"] = placeholder_style(doc) + str(attrs.get("style") or "")
        img = img_tag(candidates("jpeg"), width, height, args, attrs)
        sources = [
            (output_format(ext).content_type, candidates(ext))
            for ext in formats
            if ext != "jpeg" and ext not in UNAVAILABLE  # a Pillow without AVIF offers none
        ]
        return picture_tag(sources, img) if formats else img

    def dimensions(self, doc: Doc | None, size: Size) -> tuple[int | None, int | None]:
        """What ``size`` of the image ``doc`` describes will measure."""
        if size.kind == CROP:
            return size.width, size.height
        source = source_dimensions(doc)
        return geometry_dimensions(*source, size) if source else (None, None)

    def high_density(self, doc: Doc | None, size: Size) -> Size | None:
        """The 2x size, if the original has the pixels and the configuration allows it."""
        source = source_dimensions(doc)
        if source is None:
            return None
        bigger = high_density_size(*source, size, self.config.max_dimension)
        if bigger is None:
            return None
        try:
            return self.sizes.parse(bigger.name)  # honours HUIMAGES_ALLOWED_SIZES
        except HuImagesError:
            return None


def _fits(size: Size, ext: str) -> bool:
    """Whether ``ext`` is offered at ``size`` (PNG stops at small boxes)."""
    try:
        check_variant(size, ext)
    except HuImagesError:
        return False
    return True


def placeholder_style(doc: Doc) -> str:
    """The CSS that paints an image before it arrives: its dominant colour, and over it
    its tiny copy stretched and blurred by the browser; "" for a document without."""
    colour, tiny = doc.get("color"), doc.get("placeholder")
    parts = []
    if isinstance(colour, str) and re.fullmatch(r"#[0-9a-f]{6}", colour):
        parts.append(f"background-color:{colour};")
    if isinstance(tiny, str) and re.fullmatch(r"data:image/webp;base64,[A-Za-z0-9+/=]+", tiny):
        parts.append(f"background-image:url({tiny});background-size:cover;")
    return "".join(parts)

