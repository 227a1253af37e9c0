"""The derivative cache: a plain directory tree a webserver can serve.

Layout: ``<cache_dir>/<size>/<ID>.<ext>``, mirroring the canonical URL
``/<size>/<ID>.<ext>`` so lighttpd, Apache or nginx with the cache directory
as document root answer hits without Python. Everything that is not a
finished variant (temporary files, lock stripes) starts with a dot, which the
shipped webserver configurations refuse to serve.

Files appear atomically (hidden temporary file in the same directory, then
rename), and concurrent requests for one missing variant are collapsed into a
single generation by an ``flock`` on one of a fixed set of lock stripes.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from stat import S_ISDIR, S_ISREG
from typing import BinaryIO

from ..core.errors import GenerationBusy, ImageNotFound
from ..core.files import atomic_file, unlink_quietly
from ..core.locks import try_lock

LOCK_STRIPES = 4096


class CachedFile:
    """One finished variant in the cache: where it is and its ``lstat``.

    ``relative`` is ``<size>/<ID>.<ext>``, the URL path below the cache root
    (what X-Accel-Redirect names); ``path`` the absolute file name.
    """

    __slots__ = ("path", "relative", "imageid", "ext", "stat")

    def __init__(
        self, path: str, relative: str, imageid: str, ext: str, stat: os.stat_result
    ) -> None:
        self.path, self.relative, self.imageid = path, relative, imageid
        self.ext, self.stat = ext, stat


class Cache:
    def __init__(self, root: Path, lock_timeout: float = 30.0) -> None:
        self.root = Path(root)
        self.lock_timeout = lock_timeout
        self.lock_dir = self.root / ".locks"
        self._root = str(self.root)

    def path(self, size_name: str, imageid: str, ext: str = "jpeg") -> Path:
        """Callers pass only validated size names and IDs: no traversal possible."""
        return self.root / size_name / f"{imageid}.{ext}"

    def lookup(self, size_name: str, imageid: str, ext: str) -> CachedFile | None:
        """The finished variant, or None when it is not made yet: the one place that finds one.

        Two ``lstat`` calls and no pathlib, since every cache hit pays for
        them. A symlink or other oddity planted in place of the file or of
        its size directory is refused (ImageNotFound) and never followed,
        whoever asks; a path that cannot exist (a file where the size
        directory should be) is "not made yet", and making it then fails as
        a write does, with a 503.
        """
        directory = f"{self._root}/{size_name}"
        relative = f"{size_name}/{imageid}.{ext}"
        path = f"{self._root}/{relative}"
        try:
            if not S_ISDIR(os.lstat(directory).st_mode):
                raise ImageNotFound("not a cached image")
            stat = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not S_ISREG(stat.st_mode):
            raise ImageNotFound("not a cached image")
        return CachedFile(path, relative, imageid, ext, stat)

    def _open_stripe(self, path: Path) -> int:
        """A descriptor of the lock file of ``path``'s stripe (one of ``LOCK_STRIPES``)."""
        digest = hashlib.sha1(str(path).encode(), usedforsecurity=False).digest()
        stripe = int.from_bytes(digest[:4], "big") % LOCK_STRIPES
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        return os.open(self.lock_dir / f"{stripe:04d}", os.O_RDWR | os.O_CREAT, 0o600)

    def being_made(self, size_name: str, imageid: str, ext: str) -> bool:
        """Whether a request of this node holds the variant's single-flight lock now
        (or that of another variant in its stripe): one asking for it will wait there
        and find the file, holding no render slot."""
        try:
            fd = self._open_stripe(self.path(size_name, imageid, ext))
        except OSError:  # no lock directory (a cache that cannot exist): making it says so
            return False
        try:
            return not try_lock(fd)
        finally:
            os.close(fd)

    @contextmanager
    def _stripe_lock(self, path: Path) -> Iterator[None]:
        fd = self._open_stripe(path)
        try:
            deadline = time.monotonic() + self.lock_timeout
            delay = 0.002
            while not try_lock(fd):
                if time.monotonic() >= deadline:
                    raise GenerationBusy("this image is being generated; try again shortly")
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def produce(
        self, size_name: str, imageid: str, ext: str, write: Callable[[BinaryIO], object],
        admitted: Callable[[], AbstractContextManager[object]] = nullcontext,
        mtime: float | None = None,
    ) -> CachedFile:
        """The variant, written once by ``write`` (single-flight across the node's
        processes): the caller has looked it up and missed; it is looked up once more
        in the lock (another request may have made it meanwhile), and only then is
        the render admitted (``admitted()`` is held while writing). So a request that
        waits for another to make the same variant holds no render slot. ``mtime``:
        the file's modification time, its Last-Modified (the renderer's, from the
        catalog, so every node gives a variant the same)."""
        path = self.path(size_name, imageid, ext)
        with self._stripe_lock(path):
            cached = self.lookup(size_name, imageid, ext)  # made by another request meanwhile
            if cached is not None:
                return cached
            with admitted():
                path.parent.mkdir(parents=True, exist_ok=True)
                require_plain_dir(path.parent)  # a link may have appeared meanwhile
                with atomic_file(path, mtime=mtime) as handle:
                    write(handle)
        cached = self.lookup(size_name, imageid, ext)
        if cached is None:  # pruned or purged in the microseconds since the rename
            raise GenerationBusy("the variant was removed while being made; retry")
        return cached

    def size_dirs(self) -> Iterator[Path]:
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                yield Path(entry.path)

    def purge(self, imageid: str) -> int:
        """Delete every cached variant of one image on this node."""
        removed = 0
        for directory in self.size_dirs():
            for candidate in directory.glob(f"{imageid}.*"):
                if not candidate.name.startswith(".") and unlink_quietly(candidate):
                    removed += 1
        return removed


def is_plain_dir(path: str | Path) -> bool:
    """True for a real directory, False for a symlink (or anything else, or nothing).

    ``O_NOFOLLOW`` guards only a path's last component; checking the size
    directory too keeps a planted directory symlink from leading reads or
    writes out of the cache.
    """
    try:
        return S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def require_plain_dir(path: Path) -> None:
    if not is_plain_dir(path):
        raise ImageNotFound("not a cached image")
