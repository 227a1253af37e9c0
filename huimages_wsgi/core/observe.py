"""Measurements the lower layers report, without knowing who records them.

A backend call, a render and an upload are timed where they happen
(``storage/``, ``store/``), but the layer that exports them (``web/metrics.py``,
on ``/_metrics``) sits above. So the lower layers report to this module and
the exporter, when there is one, installs itself as the process's recorder::

    from ..core.observe import timed

    @timed("sqlite", "get")
    def get(self, imageid): ...

With no recorder installed (an application that mounts only
``ImageMiddleware``, the command line) reporting costs a clock read. A
recorder never fails the work it measures: its errors are logged and dropped.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from .errors import BackendUnavailable, HuImagesError

log = logging.getLogger("huimages_wsgi")

F = TypeVar("F", bound=Callable[..., Any])


class Recorder(Protocol):
    def backend_call(self, backend: str, operation: str, seconds: float, failed: bool) -> None: ...

    def render(self, source: str, fmt: str, seconds: float) -> None: ...

    def upload(self, seconds: float, nbytes: int) -> None: ...


_recorder: Recorder | None = None


def install(recorder: Recorder | None) -> None:
    """Make ``recorder`` the one this process reports to (None: stop recording)."""
    global _recorder
    _recorder = recorder


def _record(method: str, *args: Any) -> None:
    recorder = _recorder
    if recorder is None:
        return
    try:
        getattr(recorder, method)(*args)
    except Exception:  # noqa: BLE001 - a measurement must never fail the work measured
        log.exception("recording %s failed", method)


def timed(backend: str, operation: str) -> Callable[[F], F]:
    """Time each call of a backend method. A failed call is one the backend failed:
    ``BackendUnavailable`` or an error that is not the package's; a missing image,
    a malformed ID or a refused update is an answer, not a backend error."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            failed = True
            try:
                result = function(*args, **kwargs)
                failed = False
                return result
            except HuImagesError as exc:
                failed = isinstance(exc, BackendUnavailable)
                raise
            finally:
                _record("backend_call", backend, operation,
                        time.perf_counter() - started, failed)

        return call  # type: ignore[return-value]

    return decorate


def rendered(source: str, fmt: str, seconds: float) -> None:
    """One variant rendered from ``source`` ("preview" or "original") into ``fmt``."""
    _record("render", source, fmt, seconds)


@contextmanager
def uploading(nbytes: int) -> Iterator[None]:
    """Time one upload of ``nbytes`` that succeeds (a refused one is not counted here)."""
    started = time.perf_counter()
    yield
    _record("upload", time.perf_counter() - started, nbytes)
