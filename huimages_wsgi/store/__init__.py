"""The store: ImageStore over the storage backends, or HttpImageStore over a server's API."""

from __future__ import annotations

from ..core.config import Config
from .httpstore import HttpImageStore
from .imagestore import ImageStore


def open_store(config: Config) -> ImageStore | HttpImageStore:
    """The store the client library and CLI use: over HTTP when HUIMAGES_API_URL is set."""
    return HttpImageStore(config) if config.api_url else ImageStore(config)


__all__ = ["HttpImageStore", "ImageStore", "open_store"]
