"""Writing a file atomically: the one way every layer puts a file in place.

A hidden temporary file beside the target (its name starts with a dot, which
no shipped webserver configuration serves, and ends in ``TEMP_SUFFIX``, which
``huimages prune-cache`` clears after a crash) is written, then renamed over
the target: readers see the old file or the new one, never a part.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

TEMP_SUFFIX = ".tmp"


def fsync_dir(directory: Path) -> None:
    """Make the entries of ``directory`` (a rename into it, a new subdirectory) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink_quietly(path: str | Path) -> bool:
    """Remove ``path``; False if it was not there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


@contextmanager
def atomic_file(
    path: Path, durable: bool = False, mtime: float | None = None
) -> Iterator[BinaryIO]:
    """A handle to write ``path``'s new content to; in place (mode 0644) when the block ends.

    ``mtime``: the file's modification time once in place (its access time is now).

    ``durable``: the file is fsynced before the rename and its directory
    after it (and the directory above, when this created the directory), in
    that order, so once the block has ended the file survives a power cut
    whole. An exception in the block leaves no temporary file and the old
    ``path`` as it was.
    """
    new_dir = not path.parent.is_dir()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        if mtime is not None:
            os.utime(tmp, (time.time(), mtime))
        os.replace(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise
    if durable:
        fsync_dir(path.parent)
        if new_dir:
            fsync_dir(path.parent.parent)


def write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Put ``data`` in place as ``path`` (see ``atomic_file``)."""
    with atomic_file(path, durable) as handle:
        handle.write(data)
