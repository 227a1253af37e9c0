"""huimages-wsgi: store image originals, serve them at any size.

``import huimages_wsgi as huimages`` gives the original huImages module-level
API, backed by a default ``ImageStore`` configured from the environment on
first use. Applications that need explicit configuration (or two stores)
create ``ImageStore(Config(...))`` themselves.

``make_app`` (the standalone server, with the API, browse pages and metrics)
is imported on first use, so an application that mounts ``ImageMiddleware``
loads none of those.
"""

from __future__ import annotations

from typing import Any

from .config import Config
from .errors import (
    BackendUnavailable,
    HuImagesError,
    ImageNotFound,
    ImageTooLarge,
    InvalidImage,
    InvalidImageId,
    InvalidSize,
)
from .functions import (
    configure,
    default_store,
    delete_image,
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
    set_title,
    update_metadata,
)
from .middleware import ImageMiddleware
from .store import ImageStore

__version__ = "1.0.0"


def __getattr__(name: str) -> Any:
    if name == "make_app":
        from .app import make_app

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
