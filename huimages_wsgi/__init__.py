"""huimages-wsgi: store image originals, serve them at any size.

``import huimages_wsgi as huimages`` gives the original huImages module-level
API (``save_image``, ``imageurl`` ...), each a one-line front over a default
store, built from the environment on first use (so importing the package does
no I/O) and replaceable with ``configure()``. With ``HUIMAGES_API_URL`` set the
default store talks to that server's HTTP API (store/httpstore.py) instead of
the storage backends. Applications that need explicit configuration (or two stores)
create ``ImageStore(Config(...))`` themselves.

``make_app`` (the standalone server, with the API, browse pages and metrics)
is imported on first use, so an application that mounts ``ImageMiddleware``
loads none of those.
"""

from __future__ import annotations

import threading
from typing import Any

from .core.config import Config
from .core.errors import (
    BackendUnavailable,
    HuImagesError,
    ImageNotFound,
    ImageTooLarge,
    InvalidImage,
    InvalidImageId,
    InvalidSize,
)
from .store import HttpImageStore, ImageStore, open_store
from .web.middleware import ImageMiddleware

__version__ = "1.0.0"

_default: ImageStore | HttpImageStore | None = None
_lock = threading.Lock()


def default_store() -> ImageStore | HttpImageStore:
    global _default
    with _lock:
        if _default is None:
            _default = open_store(Config.from_env())
        return _default


def configure(config: Config | None = None, **settings: Any) -> ImageStore | HttpImageStore:
    """Replace the default store, e.g. ``configure(data_dir="/srv/images")``."""
    global _default
    with _lock:
        _default = open_store(config or Config.from_env(**settings))
        return _default


def save_image(
    imagedata: bytes,
    contenttype: str | None = None,
    timestamp: Any = None,
    title: str = "",
    references: dict | None = None,
    filename: str = "image.jpeg",
    typ: str = "",
) -> str:
    return default_store().save_image(
        imagedata, contenttype, timestamp, title, references, filename, typ
    )


def delete_image(imageid: str) -> None:
    default_store().delete_image(imageid)


def get_imagedoc(imageid: str) -> dict:
    return default_store().get_imagedoc(imageid)


def get_length(imageid: str) -> int:
    return default_store().get_length(imageid)


def imageurl(imageid: str, size: str = "o") -> str:
    return default_store().imageurl(imageid, size)


def scaled_imageurl(imageid: str, size: str = "150x150", ext: str = "jpeg") -> str:
    return default_store().scaled_imageurl(imageid, size, ext)


def scaled_imagedata(imageid: str, size: str = "square", ext: str = "jpeg") -> bytes:
    return default_store().scaled_imagedata(imageid, size, ext)


def scaled_dimensions(imageid: str, size: str = "square") -> tuple[int | None, int | None]:
    return default_store().scaled_dimensions(imageid, size)


def scaled_tag(imageid: str, size: str = "square", *args: str, **attrs: str) -> str:
    return default_store().scaled_tag(imageid, size, *args, **attrs)


def get_random_imageid() -> str | None:
    return default_store().get_random_imageid()


def get_next_imageid(imageid: str) -> str | None:
    return default_store().get_next_imageid(imageid)


def get_previous_imageid(imageid: str) -> str | None:
    return default_store().get_previous_imageid(imageid)


def update_metadata(
    imageid: str, title: str = "", references: dict | None = None, typ: str = ""
) -> dict:
    return default_store().update_metadata(imageid, title, references, typ)


def set_title(imageid: str, newtitle: str) -> dict:
    return default_store().set_title(imageid, newtitle)


def __getattr__(name: str) -> Any:
    if name == "make_app":
        from .web.app import make_app

        return make_app
    raise AttributeError(f"module 'huimages_wsgi' has no attribute {name!r}")


__all__ = [
    "BackendUnavailable",
    "Config",
    "HuImagesError",
    "ImageMiddleware",
    "ImageNotFound",
    "ImageStore",
    "ImageTooLarge",
    "InvalidImage",
    "InvalidImageId",
    "InvalidSize",
    "configure",
    "default_store",
    "delete_image",
    "get_imagedoc",
    "get_length",
    "get_next_imageid",
    "get_previous_imageid",
    "get_random_imageid",
    "imageurl",
    "make_app",
    "save_image",
    "scaled_dimensions",
    "scaled_imagedata",
    "scaled_imageurl",
    "scaled_tag",
    "set_title",
    "update_metadata",
]
