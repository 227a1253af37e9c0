"""Structured log lines: one event per line, as logfmt (``text``) or JSON.

Set up once by the front (``huimages`` CLI, hence ``huimages serve`` and
``huimages fcgi``) with :func:`configure_logging`, or by ``make_app`` through
:func:`ensure_logging` when nothing set logging up (plain ``gunicorn
'huimages_wsgi:make_app()'``); library code only calls
``logging`` and attaches machine-readable fields with ``extra={"fields": {...}}``.
Both formats carry the same keys (``ts``, ``level``, ``logger``, ``msg``, the
fields, and ``exc`` with the traceback of an error), so switching
``HUIMAGES_LOG_FORMAT`` changes the syntax, never what a log search finds.
A traceback stays on its one line in both formats, escaped, so a log shipper
never splits an error into unrelated lines.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from typing import Any

ACCESS_LOGGER = "huimages_wsgi.access"
_BARE_VALUE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:!+")


def _event(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    event: dict[str, Any] = {
        "ts": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "pid": record.process or os.getpid(),
        "msg": record.getMessage(),
    }
    event.update(getattr(record, "fields", None) or {})
    if record.exc_info:
        event["exc"] = formatter.formatException(record.exc_info)
    elif record.stack_info:
        event["exc"] = formatter.formatStack(record.stack_info)
    return event


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_event(record, self), default=str, ensure_ascii=False)


class LogfmtFormatter(logging.Formatter):
    """``key=value`` pairs, values quoted only when they need it (the logfmt convention)."""

    def format(self, record: logging.LogRecord) -> str:
        pairs = _event(record, self).items()
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in pairs)


def _logfmt_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value if isinstance(value, str) else str(value)
    if text and all(char in _BARE_VALUE for char in text):
        return text
    return json.dumps(text, ensure_ascii=False)  # quotes, and escapes newlines and quotes


FORMATTERS: dict[str, type[logging.Formatter]] = {"text": LogfmtFormatter, "json": JsonFormatter}


def make_formatter(log_format: str) -> logging.Formatter:
    return FORMATTERS[log_format]()


def configure_logging(log_format: str = "text", verbose: bool = False) -> None:
    """Root handler on stderr in the chosen format, warnings and up unless ``verbose``.

    The access logger is always let through at INFO: whether there are access
    lines at all is ``Config.access_log``, decided where they are written.
    Replaces any handlers the root logger already has, so calling it twice
    (tests, a CLI run inside a host) does not duplicate lines.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(make_formatter(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO)


def ensure_logging(log_format: str = "text", access_log: bool = False) -> None:
    """Log as configured under fronts we do not run, without overriding a host's setup.

    With no root handler yet (plain gunicorn, a bare WSGI server) this is
    :func:`configure_logging`; a host that configured logging keeps its
    handlers and formats, and only gets the access lines it asked for.
    """
    if not logging.getLogger().handlers:
        configure_logging(log_format)
    elif access_log:
        logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO)
