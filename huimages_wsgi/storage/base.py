"""The two storage interfaces every backend implements.

Kept deliberately small: a backend is one file that fills in these methods.
Documents are plain dicts in the original huImages CouchDB shape, so a
catalog can be swapped without touching the layers above.
"""

from __future__ import annotations

import datetime
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from ..core.errors import BackendUnavailable, HuImagesError, ImageNotFound
from ..core.previews import check_preview_name

Doc = dict[str, Any]
Mutation = Callable[[Doc], None]
#: A position in a catalog's change feed: an int (SQLite, CouchDB 1.x, PouchDB) or
#: CouchDB 2+'s opaque string ("12-g1AAAA..."); stored and sent back as it came.
Seq = Any


@dataclass(frozen=True)
class Change:
    """One document that changed: its newest state (None when CouchDB removed it)."""

    seq: Seq
    imageid: str
    doc: Doc | None


class ChangesGone(HuImagesError):
    """The feed cannot continue from this checkpoint (trimmed, or a new catalog)."""

    status = 503


def seq_number(seq: Seq) -> int:
    """The counting part of a sequence (``12`` of ``"12-g1AA..."``); 0 if it has none."""
    try:
        return int(str(seq).split("-", 1)[0])
    except ValueError:
        return 0


class BlobNotFound(ImageNotFound):
    """The catalog may know the image, but its original bytes are not here."""


class GuardedReader:
    """A blob's file object whose own read errors stay apart from bad image data.

    Pillow reports a corrupt file as OSError too; an I/O error of the disk
    or the spool underneath must not be taken for one, or a healthy original
    would be marked broken. A failing read becomes BackendUnavailable (503).
    """

    def __init__(self, handle: BinaryIO, what: str) -> None:
        self._handle, self._what = handle, what

    def read(self, size: int = -1) -> bytes:
        return self._guarded(self._handle.read, size)

    def readline(self, size: int = -1) -> bytes:
        return self._guarded(self._handle.readline, size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._guarded(self._handle.seek, offset, whence)

    def _guarded(self, call: Callable[..., Any], *args: int) -> Any:
        try:
            return call(*args)
        except OSError as exc:
            raise BackendUnavailable(f"cannot read {self._what}: {exc}") from exc

    def tell(self) -> int:
        return self._handle.tell()


class BlobStore(ABC):
    """Where original bytes live, keyed by image ID.

    Next to each original a store may keep *derived* blobs: the reduced
    previews made at upload (previews.py), under one of a fixed set of names.
    They can always be made again from the original, so a store that keeps
    none (the legacy CouchDB attachments) simply inherits the defaults below
    and its images render from the original.
    """

    @abstractmethod
    def put(self, imageid: str, data: bytes, content_type: str, width: int, height: int) -> None:
        """Store the original. Idempotent: the ID is derived from the bytes."""

    @abstractmethod
    def open(self, imageid: str) -> BinaryIO:
        """A readable, closable file object with the original; raises BlobNotFound."""

    @abstractmethod
    def exists(self, imageid: str) -> bool: ...

    @abstractmethod
    def delete(self, imageid: str) -> None:
        """Remove the original and its derived blobs; missing is not an error."""

    def put_derived(self, imageid: str, name: str, data: bytes) -> bool:
        """Store a derived JPEG beside the original; False if this store keeps none.

        ``name`` is one of ``previews.PREVIEW_NAMES`` (checked). Overwrites:
        the same original always gives the same previews.
        """
        check_preview_name(name)
        return False

    def open_derived(self, imageid: str, name: str) -> BinaryIO:
        """A readable, closable file object with a derived blob; raises BlobNotFound."""
        check_preview_name(name)
        raise BlobNotFound(f"{self.describe()} keeps no previews")

    def check(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Raise BackendUnavailable when the store cannot be reached."""

    def describe(self) -> str:
        return type(self).__name__


class Catalog(ABC):
    """Where metadata documents live, keyed by image ID."""

    @abstractmethod
    def get(self, imageid: str) -> Doc | None: ...

    @abstractmethod
    def update(self, imageid: str, mutate: Mutation) -> Doc:
        """Atomically read (``{}`` if new), apply ``mutate`` in place, and write.

        Backends with optimistic concurrency retry on conflict, calling
        ``mutate`` again on the fresh document, so no concurrent change is lost.
        """

    @abstractmethod
    def next_id(self, imageid: str) -> str | None:
        """The next non-deleted ID in ID order, or None at the end."""

    @abstractmethod
    def previous_id(self, imageid: str) -> str | None: ...

    @abstractmethod
    def random_id(self) -> str | None:
        """A random non-deleted ID, or None when the catalog is empty."""

    @abstractmethod
    def ids(self, include_deleted: bool = False) -> Iterator[str]:
        """Every ID in ID order (for bulk jobs such as migration)."""

    @abstractmethod
    def recent_ids(self, limit: int) -> list[str]:
        """Newest non-deleted images first (by ctime)."""

    def find(self, kind: str, name: str, value: str, limit: int) -> list[str]:
        """The live images with the term (``search_terms``), newest first."""
        raise NotImplementedError(f"{self.describe()} finds no images by their terms")

    def tag_counts(self, limit: int) -> list[tuple[str, int]]:
        """The tags of live images with their counts, the most used first."""
        raise NotImplementedError(f"{self.describe()} counts no tags")

    def check(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Raise BackendUnavailable when the catalog cannot be reached."""

    def describe(self) -> str:
        return type(self).__name__

    # -- the change feed (follower.py keeps each node's cache coherent with it) ------

    def identity(self) -> str:
        """Names this catalog's change history; a checkpoint from another one is void."""
        return self.describe()

    def update_seq(self) -> Seq:
        """The sequence of the newest change: following from here sees only later ones."""
        raise NotImplementedError(f"{self.describe()} has no change feed")

    def changes(self, since: Seq, timeout: float, heartbeat: float) -> Iterator[Change | None]:
        """The changes after ``since``, in order, as they happen, for about ``timeout`` s.

        Yields None at least every ``heartbeat`` seconds while nothing changes
        (proof that the feed is alive). Raises ChangesGone when it cannot serve
        ``since`` any more, BackendUnavailable when the catalog is unreachable.
        """
        raise NotImplementedError(f"{self.describe()} has no change feed")

    def live_ids(self, imageids: Iterable[str]) -> set[str]:
        """Which of ``imageids`` are live images (for a full reconcile of a cache)."""
        return {imageid for imageid in imageids if is_live(self.get(imageid))}


def timestamp(now: datetime.datetime | None = None) -> str:
    """The original huImages timestamp format, ``20090129T123456.000123``."""
    now = now or datetime.datetime.now()
    return f"{now:%Y%m%dT%H%M%S}.{now.microsecond:06d}"


def is_live(doc: Doc | None) -> bool:
    return bool(doc) and not doc.get("deleted")


def broken_mark(doc: Mapping[str, Any] | None) -> dict[str, str] | None:
    """The document's mark as ``{"reason", "time"}``, None if unmarked (old string marks too)."""
    mark = (doc or {}).get("broken")
    if not mark:
        return None
    if isinstance(mark, Mapping):
        return {"reason": str(mark.get("reason") or "unknown"), "time": str(mark.get("time", ""))}
    return {"reason": str(mark), "time": str((doc or {}).get("mtime", ""))}


def marked_the_old_way(doc: Mapping[str, Any] | None) -> bool:
    """``deleted`` set together with ``broken``: hidden by a failed decode, not by a person."""
    return bool(doc) and bool(doc.get("deleted")) and broken_mark(doc) is not None  # type: ignore[union-attr]


def recorded_size(doc: Doc | None) -> tuple[int, int]:
    """The original's (width, height) as a document records it; (0, 0) if it does not.

    Documents may be old or edited by hand: anything but two positive
    numbers counts as unknown rather than as an error.
    """
    try:
        width, height = int((doc or {}).get("width") or 0), int((doc or {}).get("height") or 0)
    except (TypeError, ValueError):
        return 0, 0
    return (width, height) if width > 0 and height > 0 else (0, 0)


def source_dimensions(doc: Doc | None) -> tuple[int, int] | None:
    """The original's upright size as the catalog knows it; None if unknown or deleted."""
    size = recorded_size(doc)
    return size if is_live(doc) and size != (0, 0) else None


def search_terms(doc: Doc | None) -> set[tuple[str, str, str]]:
    """What a catalog finds a live image by: ``("reference", name, value)`` for each value
    of its references (huImages keeps a list per name), ``("type", "", type)`` and
    ``("tag", "", tag)``; values as text. Nothing for a deleted image."""
    if not is_live(doc):
        return set()
    assert doc is not None
    terms: set[tuple[str, str, str]] = set()
    references = doc.get("references")
    if isinstance(references, Mapping):
        for name, values in references.items():
            for value in values if isinstance(values, list) else [values]:
                if value not in (None, ""):
                    terms.add(("reference", str(name), term_text(value)))
    for kind, field in (("type", "types"), ("tag", "tags")):
        values = doc.get(field)
        if isinstance(values, list):
            terms.update((kind, "", term_text(value)) for value in values
                         if value not in (None, ""))
    return terms


def term_text(value: Any) -> str:
    """A term's value as text, as JavaScript's ``String`` writes it (CouchDB's view does):
    ``true``, ``2`` for 2.0, else ``str``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
