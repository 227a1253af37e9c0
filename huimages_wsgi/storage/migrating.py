"""Serve legacy attachment originals while moving them to the primary store.

huImages' first versions kept originals as CouchDB attachments. On the first
read of such an image the bytes are copied to the primary store (S3) and
verified there before anything else happens; the attachment itself is left
untouched, so an interrupted migration can never lose an original.
"""

from __future__ import annotations

import logging
from typing import BinaryIO

from .base import BlobNotFound, BlobStore, GuardedReader
from .couch import CouchAttachmentStore

log = logging.getLogger("huimages_wsgi")

MOVED = "moved"
ALREADY_THERE = "already there"
NOTHING_TO_MOVE = "nothing to move"


class MigratingBlobStore(BlobStore):
    def __init__(self, primary: BlobStore, legacy: CouchAttachmentStore) -> None:
        self.primary = primary
        self.legacy = legacy

    def put(self, imageid: str, data: bytes, content_type: str, width: int, height: int) -> None:
        self.primary.put(imageid, data, content_type, width, height)

    def put_derived(self, imageid: str, name: str, data: bytes) -> bool:
        """Previews live in the primary store only; attachments stay as they were."""
        return self.primary.put_derived(imageid, name, data)

    def open_derived(self, imageid: str, name: str) -> BinaryIO:
        return self.primary.open_derived(imageid, name)

    def open(self, imageid: str) -> BinaryIO:
        try:
            return self.primary.open(imageid)
        except BlobNotFound:
            pass
        self.migrate(imageid)
        return self.primary.open(imageid)

    def migrate(self, imageid: str) -> str:
        """Copy one attachment-only original to the primary store; idempotent.

        The copy carries the dimensions the catalog records, so its metadata
        is as good as a direct upload's.
        """
        if self.primary.exists(imageid):
            return ALREADY_THERE
        if not self.legacy.exists(imageid):
            raise BlobNotFound(f"no original for {imageid} in any store")
        with self.legacy.open(imageid) as handle:
            data = GuardedReader(handle, f"the attachment of {imageid}").read()
        width, height = self.legacy.dimensions(imageid)
        self.primary.put(imageid, data, "image/jpeg", width, height)  # put verifies the copy
        log.info("migrated original %s to %s", imageid, self.primary.describe())
        return MOVED

    def exists(self, imageid: str) -> bool:
        return self.primary.exists(imageid) or self.legacy.exists(imageid)

    def delete(self, imageid: str) -> None:
        self.primary.delete(imageid)
        self.legacy.delete(imageid)

    def check(self) -> None:
        self.primary.check()
        self.legacy.check()

    def describe(self) -> str:
        return f"{self.primary.describe()} (migrating from {self.legacy.describe()})"


def migrate_one(store: MigratingBlobStore, imageid: str) -> str:
    """Move one attachment-only original; ``NOTHING_TO_MOVE`` when there is none at all."""
    try:
        return store.migrate(imageid)
    except BlobNotFound:
        return NOTHING_TO_MOVE
