"""Exceptions shared by every layer.

Each carries the HTTP status it maps to, so the WSGI layer can answer any of
them with a clear status and message instead of a stack trace, and the client
and CLI can show the same message to a person.
"""

from __future__ import annotations


class HuImagesError(Exception):
    """Base class: a problem we expected and can explain to the caller."""

    status = 400
    #: Whether a 5xx of this kind is logged per request (False: counted elsewhere).
    logged = True

    def client_message(self) -> str:
        """What a client is told: the message itself, unless it names the server's
        internals (a backend's address, a path), which only the log and /_health show."""
        return str(self)


class InvalidImageId(HuImagesError, ValueError):
    status = 400


class InvalidSize(HuImagesError, ValueError):
    status = 400


class InvalidPath(HuImagesError, ValueError):
    status = 404


class InvalidTimestamp(HuImagesError, ValueError):
    status = 400


class InvalidFocus(HuImagesError, ValueError):
    status = 400


class ImageNotFound(HuImagesError, LookupError):
    status = 404


class InvalidImage(HuImagesError, ValueError):
    """The bytes are not an image we accept (or not an image at all)."""

    status = 415


class ImageTooLarge(HuImagesError, ValueError):
    """An upload, an original or a requested output exceeds a configured limit."""

    status = 413


class LimitExceeded(ImageTooLarge):
    """A stored original is over a limit of this server's configuration (e.g.
    HUIMAGES_MAX_PIXELS): the request is refused and the image left alone, as
    raising the limit makes it work again. 422, not 413: the request is fine."""

    status = 422


class ImageBroken(ImageNotFound):
    """The original is marked broken: it did not decode. The image stays in the
    catalog (never deleted for this); ``huimages check`` re-tests it."""
class RequestRefused(HuImagesError):
    """An HTTP-level refusal (auth, method, media type, syntax) with its own status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})


class Moved(HuImagesError):
    """A URL huImages answered whose variant lives at another URL now: a 301 there.

    ``path`` is the canonical path below the image root (``/o/<ID>.png``); the
    web layer puts whatever the image root is mounted under before it."""

    status = 301

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class MethodNotAllowed(HuImagesError):
    """Image URLs and read-only endpoints answer GET and HEAD only."""

    status = 405


class SignatureError(HuImagesError):
    status = 403


class SizeNotAllowed(HuImagesError):
    status = 403


class BackendUnavailable(HuImagesError, RuntimeError):
    """A storage backend is down or too slow; the request may succeed later.

    The message names the backend and its error for the log; a client is told
    only that the storage is unavailable."""

    status = 503

    def client_message(self) -> str:
        return "the image storage is unavailable just now; retry shortly"


class WriteFailed(BackendUnavailable):
    """Writing a variant failed here (a full disk, an I/O error): the server's fault.

    Never a reason to think less of the image, which is why it is not an
    InvalidImage (that marks the original broken); a 503 like any outage.
    """

    def client_message(self) -> str:
        return "the server cannot write the image just now; retry shortly"


class GenerationBusy(HuImagesError, RuntimeError):
    """Another worker is still producing this variant and did not finish in time."""

    status = 503
