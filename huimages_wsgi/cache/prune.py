"""Keeping the cache within bounds: delete the least recently used variants.

"Recently used" is ``max(atime, mtime)``: with the usual ``relatime`` mount
option the kernel refreshes atime at most daily when a file is read (by
Python or by the webserver serving the cache directly), which is precise
enough to keep what is popular; under ``noatime`` this degrades to
generation time. Pruning only ever unlinks finished files, so a reader
holding one open keeps reading it, and no partial file can appear. Temporary
files older than ``stale_after`` are leftovers of a crash and go too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..core.files import TEMP_SUFFIX
from .directory import Cache


@dataclass
class PruneReport:
    scanned_files: int = 0
    scanned_bytes: int = 0
    deleted_files: int = 0
    deleted_bytes: int = 0
    stale_temp_files: int = 0
    dry_run: bool = False
    deleted: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return (
            f"scanned {self.scanned_files} files ({_human(self.scanned_bytes)}); "
            f"{verb} {self.deleted_files} files ({_human(self.deleted_bytes)}) "
            f"and {self.stale_temp_files} stale temporary files"
        )


def _human(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def _entries(cache: Cache) -> Iterator[tuple[os.DirEntry, os.stat_result]]:
    """Files with their stat; the server renames, purges and writes meanwhile, so
    whatever vanishes between listing and stat is simply no longer there to prune."""
    for directory in cache.size_dirs():
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    try:
                        if entry.is_file(follow_symlinks=False):
                            yield entry, entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
        except FileNotFoundError:
            continue


def disk_free(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of ``path``."""
    fs = os.statvfs(path)
    return fs.f_bavail * fs.f_frsize


def prune_cache(
    cache: Cache,
    max_bytes: int | None = None,
    min_free: int | None = None,
    dry_run: bool = False,
    stale_after: float = 3600.0,
    now: float | None = None,
    free_bytes: Callable[[Path], int] = disk_free,
) -> PruneReport:
    """Delete least recently used variants until the cache holds at most ``max_bytes``
    and its filesystem has ``min_free`` bytes free (``free_bytes`` reads that, once,
    before anything is deleted); stale temporary files go in any case."""
    report = PruneReport(dry_run=dry_run)
    now = time.time() if now is None else now
    candidates: list[tuple[float, int, str]] = []
    for entry, stat in _entries(cache):
        if entry.name.startswith("."):
            if entry.name.endswith(TEMP_SUFFIX) and now - stat.st_mtime > stale_after:
                report.stale_temp_files += 1
                if not dry_run:
                    _unlink(entry.path)
            continue
        report.scanned_files += 1
        report.scanned_bytes += stat.st_size
        candidates.append((max(stat.st_atime, stat.st_mtime), stat.st_size, entry.path))

    to_free = 0
    if max_bytes is not None:
        to_free = max(to_free, report.scanned_bytes - max_bytes)
    if min_free is not None and cache.root.exists():
        to_free = max(to_free, min_free - free_bytes(cache.root))
    candidates.sort()
    for _, size, path in candidates:
        if report.deleted_bytes >= to_free:
            break
        if dry_run or _unlink(path):
            report.deleted_files += 1
            report.deleted_bytes += size
            report.deleted.append(Path(path))
    return report


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
