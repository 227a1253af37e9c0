"""RFC 9110's preconditions and byte ranges for one file: which answer, before any byte.

Usage::

    outcome = evaluate(environ, last_modified=int(stat.st_mtime), size=stat.st_size)
    outcome.status   # 200, 206, 304, 412 or 416
    outcome.ranges   # ((first, last), ...) for a 206, sorted, overlaps merged

The one validator is ``Last-Modified``: the cache file's mtime, set from the
catalog when the file is written, so every node and every webserver in front
of one gives the same date for the same variant. No answer carries an
``ETag``: lighttpd's cannot be produced by anyone else, nginx's and Apache's
differ from each other, and a validator that is not the same everywhere
turns a CDN's revalidation at another node into a full answer. Without an
entity tag, ``If-Match`` holds only for ``*``, ``If-None-Match`` (any list)
never matches, and an ``If-Range`` that names an entity tag asks for the
whole file, as section 13.1 says for a resource that has none.

The order is section 13.2.2's: If-Match, else If-Unmodified-Since (412);
If-None-Match, else If-Modified-Since (304); then Range with If-Range (206,
416). Range is honoured for GET only (section 14.2); a Range this module
cannot read, or one asking for more than ``MAX_RANGES`` pieces, is ignored
and the whole file sent, which the RFC allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any

#: More pieces than this in one Range is no download resume: the whole file instead.
MAX_RANGES = 16


@dataclass(frozen=True)
class Outcome:
    status: int
    ranges: tuple[tuple[int, int], ...] = ()


FULL = Outcome(200)


def http_date(value: str) -> int | None:
    """An HTTP date as a POSIX timestamp; None for anything unparsable (RFC 9110: ignore it)."""
    try:
        when = parsedate_to_datetime(value)
        return int((when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def evaluate(
    environ: dict[str, Any], last_modified: int, size: int, stable_bytes: bool = True
) -> Outcome:
    """The answer RFC 9110 gives a GET or HEAD of a file of ``size`` bytes last modified
    at ``last_modified`` (whole seconds), by the request's conditional headers.
    ``stable_bytes``: whether that date names these very bytes on every node (an
    original's); a rendered variant's bytes may differ between nodes of different
    versions under the same date, so an ``If-Range`` date never resumes one: the
    whole file is sent, never a splice of two renderings."""
    failed = precondition_failed(environ, last_modified)
    if failed is not None:
        return failed
    if environ.get("REQUEST_METHOD") != "GET":
        return FULL
    asked = environ.get("HTTP_RANGE")
    if asked is None:
        return FULL
    if_range = environ.get("HTTP_IF_RANGE")
    if if_range is not None and not (stable_bytes and if_range_holds(if_range, last_modified)):
        return FULL
    ranges = parse_ranges(asked, size)
    if ranges is None:
        return FULL
    return Outcome(206, ranges) if ranges else Outcome(416)


def precondition_failed(environ: dict[str, Any], last_modified: int) -> Outcome | None:
    """412 or 304 when a precondition says so; None to go on."""
    if_match = environ.get("HTTP_IF_MATCH")
    if if_match is not None:
        if if_match.strip() != "*":
            return Outcome(412)
    else:
        since = _date_header(environ, "HTTP_IF_UNMODIFIED_SINCE")
        if since is not None and last_modified > since:
            return Outcome(412)
    if_none_match = environ.get("HTTP_IF_NONE_MATCH")
    if if_none_match is not None:
        return Outcome(304) if if_none_match.strip() == "*" else None
    since = _date_header(environ, "HTTP_IF_MODIFIED_SINCE")
    if since is not None and last_modified <= since:
        return Outcome(304)
    return None


def _date_header(environ: dict[str, Any], key: str) -> int | None:
    value = environ.get(key)
    return None if value is None else http_date(value)


def if_range_holds(value: str, last_modified: int) -> bool:
    """Section 13.1.5: a date holds when it is exactly the Last-Modified; an entity tag
    never does (there is none), nor does anything unreadable."""
    value = value.strip()
    if value.startswith(('"', "W/")):
        return False
    return http_date(value) == last_modified


def parse_ranges(value: str, size: int) -> tuple[tuple[int, int], ...] | None:
    """The satisfiable byte ranges of ``value`` in ``[0, size)``, sorted and merged
    where they overlap or touch; () when none is satisfiable (416); None when the
    header is to be ignored (another unit, bad syntax, too many pieces)."""
    unit, equals, specs = value.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None
    pieces = [spec.strip() for spec in specs.split(",") if spec.strip()]
    if not pieces or len(pieces) > MAX_RANGES:
        return None
    wanted = []
    for piece in pieces:
        parsed = _one_range(piece, size)
        if parsed is False:
            return None
        if parsed is not None:
            wanted.append(parsed)
    return _merged(sorted(wanted))


def _one_range(spec: str, size: int) -> tuple[int, int] | None | bool:
    """(first, last) clipped to the file; None when unsatisfiable; False when invalid."""
    first_text, dash, last_text = spec.partition("-")
    digits = first_text + last_text
    if not dash or not digits or not (digits.isascii() and digits.isdecimal()):
        return False
    if not first_text:  # suffix: the last N bytes
        length = _count(last_text)
        return (max(size - length, 0), size - 1) if length > 0 and size > 0 else None
    first = _count(first_text)
    last = _count(last_text) if last_text else None
    if last is not None and last < first:
        return False
    if first >= size:
        return None
    return (first, size - 1 if last is None else min(last, size - 1))


def _count(digits: str) -> int:
    """ASCII digits as a number; any beyond 18 digits is past every file (and never makes
    Python convert thousands of digits)."""
    return int(digits) if len(digits.lstrip("0")) <= 18 else 10**18


def _merged(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for first, last in ranges:
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return tuple(merged)
