"""What every store shares: ``BaseImageStore`` (the huImages names over a catalog), the
upload check and ``Saved``. ``ImageStore`` (imagestore.py) writes through the backends,
``HttpImageStore`` (httpstore.py) through a server's HTTP API.
"""


from __future__ import annotations

import datetime
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from ..cache.directory import Cache
from ..core.config import Config
from ..core.errors import ImageNotFound, ImageTooLarge, InvalidImage
from ..core.ids import validate_id
from ..core.sizes import Size, SizeRules
from ..storage import (
    Catalog,
    Doc,
    is_live,
)
from .links import Links


def checked_upload(imagedata: Any, limit: int) -> bytes:
    """The bytes of an upload, refused before any parsing when not bytes or too big."""
    if not isinstance(imagedata, bytes | bytearray | memoryview):
        raise InvalidImage("image data must be bytes")
    if len(imagedata) > limit:
        raise ImageTooLarge(f"upload is {len(imagedata)} bytes; the limit is {limit}")
    return bytes(imagedata)


class Saved(NamedTuple):
    """What an upload did: the image's ID, and whether it was new (not live before)."""

    imageid: str
    new: bool


class BaseImageStore:
    """What every store shares: the huImages names, and all it answers from its catalog.

    Documents, lengths, browsing, and URLs and tags (``links.Links``) are the
    same for the store over the backends (``ImageStore``) and the one over a
    server's HTTP API (``httpstore.HttpImageStore``), each with its own
    catalog; each writes its own way (``save``, ``update_metadata``,
    ``delete_image``). ``purge`` empties this node's cache, whichever store.
    """

    def __init__(self, config: Config, catalog: Catalog) -> None:
        self.config = config
        self.catalog = catalog
        self.cache = Cache(config.cache_root, config.lock_timeout)
        self.sizes = SizeRules(config.presets, config.allowed_sizes, config.max_dimension)
        self.links = Links(config, self.sizes, lambda imageid: self.catalog.get(imageid))

    def size_for(self, text: str) -> Size:
        """Parse and apply the configured limits (box size, allow-list)."""
        return self.sizes.parse(text)

    def save_image(
        self,
        imagedata: bytes,
        contenttype: str | None = None,
        timestamp: datetime.datetime | str | None = None,
        title: str = "",
        references: Mapping[str, Any] | None = None,
        filename: str = "image.jpeg",
        typ: str = "",
        tags: Sequence[str] = (),
    ) -> str:
        """Store an original and return its ID; the same bytes give the same ID.

        ``contenttype`` is accepted for compatibility; the stored type is the
        one detected from the bytes, which are validated completely first.
        """
        del contenttype
        return self.save(imagedata, timestamp, title, references, filename, typ,
                         tags=tags).imageid

    def save(
        self,
        imagedata: bytes,
        timestamp: datetime.datetime | str | None = None,
        title: str = "",
        references: Mapping[str, Any] | None = None,
        filename: str = "image.jpeg",
        typ: str = "",
        tags: Sequence[str] = (),
    ) -> Saved:
        """Store an original (each store its own way); its ID and whether it is new."""
        raise NotImplementedError

    def update_metadata(
        self,
        imageid: str,
        title: str = "",
        references: Mapping[str, Any] | None = None,
        typ: str = "",
        *, timestamp: datetime.datetime | str | None = None, tags: Sequence[str] = (),
    ) -> Doc:
        """Add titles, references, a type or tags to an existing image (each store its own
        way); ``mtime`` becomes ``timestamp`` (now when None)."""
        raise NotImplementedError

    def set_title(self, imageid: str, newtitle: str) -> Doc:
        return self.update_metadata(imageid, title=newtitle)

    def purge(self, imageid: str) -> int:
        """Delete this node's cached variants of one image; how many files went."""
        return self.cache.purge(validate_id(imageid))

    def get_imagedoc(self, imageid: str) -> Doc:
        doc = self.catalog.get(validate_id(imageid))
        if not is_live(doc):
            raise ImageNotFound(f"no image {imageid}")
        return doc  # type: ignore[return-value]

    def get_length(self, imageid: str) -> int:
        doc = self.get_imagedoc(imageid)
        if "length" in doc:
            return int(doc["length"])
        attachments = doc.get("_attachments") or {}
        for attachment in attachments.values():
            return int(attachment["length"])
        raise ImageNotFound(f"no length known for {imageid}")

    # -- URLs and tags (links.py) -------------------------------------------

    def imageurl(self, imageid: str, size: str = "o") -> str:
        return self.links.imageurl(imageid, size)

    def original_ext(self, imageid: str, doc: Doc | None = None) -> str:
        """The extension of the original's URL: its type's (``heic`` for a HEIC)."""
        return self.links.original_ext(imageid, doc)

    def scaled_imageurl(self, imageid: str, size: str = "150x150", ext: str = "jpeg") -> str:
        return self.links.scaled_imageurl(imageid, size, ext)

    def scaled_dimensions(
        self, imageid: str, size: str = "150x150"
    ) -> tuple[int | None, int | None]:
        return self.links.scaled_dimensions(imageid, size)

    def scaled_tag(self, imageid: str, size: str = "150x150", *args: str, **options: Any) -> str:
        return self.links.scaled_tag(imageid, size, *args, **options)

    # -- browsing ------------------------------------------------------------

    def get_random_imageid(self) -> str | None:
        return self.catalog.random_id()

    def get_next_imageid(self, imageid: str) -> str | None:
        return self.catalog.next_id(validate_id(imageid))

    def get_previous_imageid(self, imageid: str) -> str | None:
        return self.catalog.previous_id(validate_id(imageid))

    def recent_ids(self, limit: int) -> list[str]:
        """The IDs of the newest live images, newest first."""
        return self.catalog.recent_ids(limit)

    def ids(self) -> Iterator[str]:
        """Every live image's ID (a bulk job's input)."""
        return self.catalog.ids()
