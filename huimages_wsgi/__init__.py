"""huimages-wsgi: store image originals, serve them at any size.

``import huimages_wsgi as huimages`` gives huImages 2.2's module-level API
(``save_image``, ``imageurl`` ..., store/module_api.py) with its signatures, defaults and
answers, over a default store built from the environment on first use (so
importing the package does no I/O) and replaceable with ``configure()``; its
settings (``huimages.IMAGESERVERURL = ...``, ``S3BUCKET``, ``COUCHSERVER``,
``COUCHDB_NAME``, the AWS keys) can be read and assigned. With ``HUIMAGES_API_URL`` set the
default store talks to that server's HTTP API (store/httpstore.py) instead of
the storage backends. Applications that need explicit configuration (or two stores)
create ``ImageStore(Config(...))`` themselves.

``make_app`` (the standalone server, with the API, browse pages and metrics)
is imported on first use, so an application that mounts ``ImageMiddleware``
loads none of those.
"""

from __future__ import annotations

import sys
import types
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
from .store import ImageStore
from .store import module_api as client
from .store.module_api import (
    TagOptions,
    configure,
    default_store,
    delete_image,
    find_images,
    get_imagedoc,
    get_length,
    get_next_imageid,
    get_previous_imageid,
    get_random_imageid,
    imageurl,
    save_image,
    scaled_dimensions,
    scaled_imagedata,
    scaled_imageurl,
    scaled_tag,
    set_focus,
    set_title,
    update_metadata,
)
from .web.middleware import ImageMiddleware

__version__ = "1.0.0"


class _Module(types.ModuleType):
    """Assigning huImages' settings (``huimages.IMAGESERVERURL = ...``) configures the
    default store, as setting them configured huImages (store/module_api.py)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in client.SETTINGS or name in client.AWS_SETTINGS:
            client.set_setting(name, value)
        else:
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Module


def __getattr__(name: str) -> Any:
    if name in client.SETTINGS or name in client.AWS_SETTINGS:
        return client.get_setting(name)
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
    "TagOptions",
    "configure",
    "default_store",
    "delete_image",
    "find_images",
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
    "set_focus",
    "set_title",
    "update_metadata",
]
