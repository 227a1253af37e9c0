"""This node's cache directory: finding and writing variants (``directory``), the
render admission of misses (``admission``) and least-recently-used cleanup
(``prune``). Imports only the leaves (``core``)."""

from .directory import Cache, CachedFile

__all__ = ["Cache", "CachedFile"]
