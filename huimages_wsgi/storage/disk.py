"""Originals as plain files under the data directory.

Sharded by the first two ID characters so no directory grows past a few
thousand entries even with millions of images. Writes are atomic and durable:
the original is the one copy we cannot regenerate, and an upload is
acknowledged only after the catalog commit that follows ``put``. So ``put``
returns only once the bytes are on disk (the temporary file fsynced) and so
is their name (the directory fsynced after the rename, and the root too when
the shard directory is new): a power cut after a 201 loses nothing.

Previews sit beside their original as ``<ID>.<name>`` (``<ID>.p512``). They
are written atomically but not fsynced: they can be made again, and one that
a crash left empty fails to decode, which the store answers by rendering
from the original.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import BinaryIO

from ..core.errors import BackendUnavailable
from ..core.files import fsync_dir, unlink_quietly, write_atomic
from ..core.ids import validate_id
from ..core.observe import timed
from ..core.previews import PREVIEW_NAMES, check_preview_name
from .base import BlobNotFound, BlobStore


def check_writable(root: Path) -> None:
    """Create ``root`` if needed and write to it; an unnamed file leaves no trace."""
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=root) as probe:
        probe.write(b"ok")


class DiskBlobStore(BlobStore):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, imageid: str) -> Path:
        validate_id(imageid)
        return self.root / imageid[:2] / imageid

    def derived_path(self, imageid: str, name: str) -> Path:
        path = self.path(imageid)
        return path.with_name(f"{path.name}.{check_preview_name(name)}")

    @timed("disk", "put")
    def put(self, imageid: str, data: bytes, content_type: str, width: int, height: int) -> None:
        path = self.path(imageid)
        if path.exists() and path.stat().st_size == len(data):
            fsync_dir(path.parent)  # an earlier put may have failed before its directory sync
            return
        write_atomic(path, data)

    @timed("disk", "open")
    def open(self, imageid: str) -> BinaryIO:
        try:
            return open(self.path(imageid), "rb")  # noqa: SIM115 - caller closes
        except FileNotFoundError:
            raise BlobNotFound(f"no original stored for {imageid}") from None
        except OSError as exc:  # permissions, a failing disk: the server's trouble, retryable
            raise BackendUnavailable(f"cannot open the original of {imageid}: {exc}") from exc

    @timed("disk", "put_derived")
    def put_derived(self, imageid: str, name: str, data: bytes) -> bool:
        write_atomic(self.derived_path(imageid, name), data, durable=False)
        return True

    @timed("disk", "open_derived")
    def open_derived(self, imageid: str, name: str) -> BinaryIO:
        try:
            return open(self.derived_path(imageid, name), "rb")  # noqa: SIM115 - caller closes
        except FileNotFoundError:
            raise BlobNotFound(f"no preview {name} stored for {imageid}") from None

    @timed("disk", "exists")
    def exists(self, imageid: str) -> bool:
        return self.path(imageid).is_file()

    @timed("disk", "delete")
    def delete(self, imageid: str) -> None:
        for name in PREVIEW_NAMES:
            unlink_quietly(self.derived_path(imageid, name))
        unlink_quietly(self.path(imageid))

    @timed("disk", "check")
    def check(self) -> None:
        """A full or read-only disk stops uploads: health should say so before they fail."""
        try:
            check_writable(self.root)
        except OSError as exc:
            raise BackendUnavailable(f"originals directory not writable: {exc}") from None

    def describe(self) -> str:
        return f"disk:{self.root}"
