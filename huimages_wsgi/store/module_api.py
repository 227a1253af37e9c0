"""huImages 2.2's module-level API, over a default store: ``import huimages_wsgi as huimages``.

    import huimages_wsgi as huimages

    huimages.IMAGESERVERURL = "https://i.example.com/"   # as applications did at start-up
    imageid = huimages.save_image(data, title="Red bike")
    huimages.scaled_tag(imageid, "vga", 'border="0"', alt="Bike")

Every function keeps huImages' signature, defaults and answers, "nothing
there" included: ``get_imagedoc`` of an unknown image is ``{}``,
``delete_image`` of one is silent, ``scaled_imagedata`` is ``None``,
``scaled_dimensions`` is ``(None, None)``, and ``get_next_imageid`` at the
end of the catalog is the same ID again. ``ImageStore`` and the HTTP API
keep raising; these fronts translate. What this project adds comes as
keyword-only arguments that no huImages call could have meant otherwise
(``ext=``; ``scaled_tag``'s ``options=TagOptions(...)``, never a string).
docs/migrating.md lists where the answers deliberately differ.

The default store is built from the environment on first use (importing the
package does no I/O); the huImages settings assigned to the module
(``IMAGESERVERURL``, ``S3BUCKET``, ``COUCHSERVER``, ``COUCHDB_NAME``, the AWS
keys) are read and set through ``huimages_wsgi/__init__.py`` and take effect
on the next call.
"""

from __future__ import annotations

import datetime
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..core.config import Config
from ..core.errors import HuImagesError, ImageNotFound, InvalidImageId
from ..core.sizes import CROP
from . import finding, focus, open_store
from .httpstore import HttpImageStore
from .imagestore import ImageStore

#: huImages' module settings by name: the Config field each sets, or the environment
#: variable boto3 reads (the AWS keys).
SETTINGS = {
    "IMAGESERVERURL": "server_url",
    "S3BUCKET": "s3_bucket",
    "COUCHSERVER": "couch_server",
    "COUCHDB_NAME": "couch_db",
}
AWS_SETTINGS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")

_default: ImageStore | HttpImageStore | None = None
_base: Config | None = None  # what configure() was given; else the environment
_overrides: dict[str, Any] = {}  # Config fields set through the module's attributes
_lock = threading.RLock()  # default_store() reads settings() while holding it


def settings() -> Config:
    """The default store's configuration: ``configure``'s (else the environment's), with
    what was assigned to the module's settings."""
    with _lock:
        base, overrides = _base, dict(_overrides)
    base = base if base is not None else Config.from_env()
    return base.with_changes(**overrides) if overrides else base


def default_store() -> ImageStore | HttpImageStore:
    global _default
    with _lock:
        if _default is None:
            _default = open_store(settings())
        return _default


def configure(config: Config | None = None, **fields: Any) -> ImageStore | HttpImageStore:
    """Replace the default store, e.g. ``configure(data_dir="/srv/images")``; settings
    assigned to the module before are forgotten (the AWS keys stay in the process's
    environment), those assigned after apply to it."""
    global _default, _base
    with _lock:
        _base = config or Config.from_env(**fields)
        _overrides.clear()
        _default = open_store(_base)
        return _default


def get_setting(name: str) -> Any:
    """``huimages.IMAGESERVERURL`` and the other huImages settings, as in effect."""
    if name in AWS_SETTINGS:
        return os.environ.get(name)
    return getattr(settings(), SETTINGS[name])


def set_setting(name: str, value: Any) -> None:
    """``huimages.S3BUCKET = "..."``: the next call uses a store built with it. The AWS
    keys go into the process's environment, where huImages (and boto3) read them;
    with ``HUIMAGES_API_URL`` set the store talks HTTP and the backends' settings
    have no effect."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"huimages.{name} is text, not {type(value).__name__}")
    if name == "IMAGESERVERURL" and not value:
        raise ValueError("huimages.IMAGESERVERURL needs a URL")
    global _default
    with _lock:
        if name in AWS_SETTINGS:  # boto3 reads the keys from the environment
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = str(value)
        else:
            _overrides[SETTINGS[name]] = value
        _default = None


# -- storing ------------------------------------------------------------------------------


def save_image(
    imagedata: bytes,
    contenttype: str | None = None,
    timestamp: datetime.datetime | str | None = None,
    title: str = "",
    references: dict | None = None,
    filename: str = "image.jpeg",
    typ: str = "",
    tags: Sequence[str] = (),
) -> str:
    """Store an original; its ID (the same bytes, the same ID). ``tags`` add up, as
    titles do (find_images(tag=...))."""
    return default_store().save_image(
        imagedata, contenttype, timestamp, title, references, filename, typ, tags
    )


def update_metadata(
    doc_id: str,
    timestamp: datetime.datetime | str | None = None,
    title: str = "",
    references: dict | None = None,
    typ: str = "",
    tags: Sequence[str] = (),
) -> str:
    """Add a title, references, a type or tags (``mtime`` becomes ``timestamp`` when
    given); the ID. A true value that is no time (huImages took any) means now."""
    if timestamp is not None and not isinstance(timestamp, datetime.date | str):
        timestamp = None
    default_store().update_metadata(
        doc_id, title=title, references=references, typ=typ, timestamp=timestamp, tags=tags
    )
    return doc_id


def find_images(*, typ: str | None = None, tag: str | None = None, limit: int = 100,
                **references: Any) -> list[str]:
    """The IDs of the live images with every reference (``sku="14600"``), type and tag
    given, newest first (store/finding.py)."""
    return finding.find_images(default_store().catalog, references, typ=typ, tag=tag,
                               limit=limit)


def set_title(imageid: str, newtitle: str) -> dict:
    return default_store().set_title(imageid, newtitle)


def delete_image(imageid: str) -> None:
    """Delete an image; one that is not there (any more) is no error, as in huImages."""
    try:
        default_store().delete_image(imageid)
    except (ImageNotFound, InvalidImageId):
        pass


# -- reading ------------------------------------------------------------------------------


def get_imagedoc(imageid: str) -> dict:
    """The image's document; ``{}`` for one that is unknown or deleted."""
    try:
        return default_store().get_imagedoc(imageid)
    except (ImageNotFound, InvalidImageId):
        return {}


def get_length(imageid: str) -> int:
    return default_store().get_length(imageid)


def imageurl(imageid: str, size: str = "o") -> str:
    return default_store().imageurl(imageid, size)


def scaled_imageurl(imageid: str, size: str = "150x150", *, ext: str = "jpeg") -> str:
    return default_store().scaled_imageurl(imageid, size, ext)


def scaled_imagedata(imageid: str, size: str = "150x150", *, ext: str = "jpeg") -> bytes | None:
    """The variant's bytes; ``None`` when there is nothing to serve (an unknown image,
    a size the server refuses), as huImages answered a non-200. An outage raises."""
    try:
        return default_store().scaled_imagedata(imageid, size, ext)
    except HuImagesError as exc:
        if exc.status >= 500:
            raise
        return None


def scaled_dimensions(imageid: str, size: str = "150x150") -> tuple[int | None, int | None]:
    """What the variant measures; ``(None, None)`` when the image is not there (a crop
    is its box, known without the image, as in huImages)."""
    try:
        return default_store().scaled_dimensions(imageid, size)
    except (ImageNotFound, InvalidImageId):
        box = default_store().sizes.parse(size)  # the server's limits apply
        return (box.width, box.height) if box.kind == CROP else (None, None)


@dataclass(frozen=True)
class TagOptions:
    """What ``scaled_tag`` adds to huImages' tag: ``srcset`` (a 2x candidate),
    ``formats`` (a ``<picture>`` with these, best first), ``base_url``."""

    srcset: bool = False
    formats: Sequence[str] = ()
    base_url: str | None = None
    placeholder: bool = False


def scaled_tag(imageid: str, size: str = "150x150", *args: str, **kwargs: Any) -> str:
    """huImages' ``<img>``: extra positional strings go in as they are, every keyword
    is an attribute, except ``options=TagOptions(...)`` and ``placeholder=True`` (the
    image's colour and tiny copy as its background; no attribute is either)."""
    options = kwargs.pop("options") if isinstance(kwargs.get("options"), TagOptions) else None
    options = options or TagOptions()
    placeholder = options.placeholder or kwargs.pop("placeholder", None) is True
    return default_store().scaled_tag(
        imageid, size, *args, srcset=options.srcset, formats=tuple(options.formats),
        base_url=options.base_url, attrs=kwargs, placeholder=placeholder,
    )


# -- browsing -----------------------------------------------------------------------------


def get_random_imageid() -> str | None:
    return default_store().get_random_imageid()


def get_next_imageid(imageid: str) -> str:
    """The next image's ID; at the end of the catalog the same ID again, as in huImages."""
    following = default_store().get_next_imageid(imageid)
    return following if following is not None else imageid


def get_previous_imageid(imageid: str) -> str:
    """The previous image's ID; at the start of the catalog the same ID again."""
    previous = default_store().get_previous_imageid(imageid)
    return previous if previous is not None else imageid


def set_focus(imageid: str, x: float | None = None, y: float | None = None) -> dict:
    """Centre the image's crops on (``x``, ``y``), fractions of the upright original;
    no point clears it (store/focus.py). The document."""
    return focus.set_focus(default_store(), imageid, x, y)

