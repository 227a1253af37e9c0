"""The one configuration object.

Built once, from keyword arguments and/or the environment (including the
historic huImages variables), then passed down explicitly. Nothing below the
CLI reads ``os.environ`` for settings, so two differently configured stores
can live in one process.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from PIL import Image, ImageColor

from .formats import AUTO_FORMATS
from .settings import (
    DEFAULT_MAX_DECODE_BYTES,
    DEFAULT_MAX_DIMENSION,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SCANS,
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_XACCEL_PREFIX,
    ENV_READERS,
    LOG_FORMATS,
    MIN_SECRET_LENGTH,
    XSENDFILE_HEADERS,
    as_text,
)
from .sizes import DEFAULT_PRESETS, validate_presets


class ConfigError(ValueError):
    """A setting that cannot work, refused when the configuration is built (at start-up)."""


def check_secret(value: str | None, field_name: str) -> None:
    """ConfigError naming the variable for a token or secret that is set but weak:
    shorter than ``MIN_SECRET_LENGTH`` characters, or with whitespace or control
    characters in it (a bearer header is read stripped, so it could never match, and a
    line break would end the header it is sent in)."""
    if value is None:
        return
    variable = ENV_READERS[field_name][0][0]
    if len(value) < MIN_SECRET_LENGTH or not value.isprintable() or " " in value:
        raise ConfigError(
            f"{variable} ({field_name}) must be at least {MIN_SECRET_LENGTH} characters with"
            " no whitespace in them (e.g. the output of: openssl rand -hex 24)")


def check_pixel_limit(max_pixels: int) -> None:
    """ValueError for a pixel limit Pillow itself would refuse images under."""
    pillow = Image.MAX_IMAGE_PIXELS
    if max_pixels < 1 or (pillow is not None and max_pixels > 2 * pillow):
        raise ValueError(
            f"max_pixels must be between 1 and {2 * pillow if pillow else 'any'}: twice"
            " Pillow's Image.MAX_IMAGE_PIXELS, above which Pillow refuses an image itself")


_PURGE_TARGET = re.compile(
    r"(?:(?:xkey|ban)\+http|https?)://(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?"
    r"(?:[/?#][!-~]*)?")
_HEADER_NAME = re.compile(r"[!#%&'*+.^_`|~0-9A-Za-z-]+")
#: Headers an image answer sets for itself: never a surrogate key's name.
_OWN_HEADERS = frozenset({
    "accept-ranges", "cache-control", "connection", "content-length", "content-range",
    "content-security-policy", "content-type", "date", "etag", "expires", "last-modified",
    "link", "location", "retry-after", "server", "set-cookie", "transfer-encoding", "vary",
    "x-accel-redirect", "x-content-type-options", "x-sendfile",
})


def check_header_name(name: str) -> str:
    """``name`` if it may name an answer's image (HUIMAGES_SURROGATE_HEADERS); ValueError
    for anything that is no header name, or one an image answer sets for itself."""
    if not _HEADER_NAME.fullmatch(name) or name.lower() in _OWN_HEADERS:
        raise ValueError(f"surrogate_headers: {name!r} cannot name a surrogate key")
    return name



@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("huimages-data")
    cache_dir: Path | None = None
    server_url: str = "http://127.0.0.1:8080/"
    alt_addition: str = ""
    presets: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PRESETS))
    jpeg_quality: int = 85

    s3_bucket: str | None = None
    s3_create_bucket: bool = False
    couch_server: str | None = None
    couch_db: str = "huimages"
    backend_timeout: float = 10.0

    secret: str | None = None
    allowed_sizes: frozenset[str] | None = None
    max_dimension: int = DEFAULT_MAX_DIMENSION
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_scans: int = DEFAULT_MAX_SCANS
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES
    lock_timeout: float = 30.0
    xsendfile: str | None = None
    xaccel_prefix: str = DEFAULT_XACCEL_PREFIX

    upload_token: str | None = None  # unset: the HTTP upload API is disabled
    api_url: str | None = None  # set: the client library talks to this server's API
    # The browse page at /_browse/. None (not set) means off, except that `huimages
    # serve` turns it on when neither S3 nor CouchDB is configured (the embedded default).
    browse: bool | None = None

    # make_app's service endpoints (health.py, metrics.py) and the log format (logs.py)
    health: bool = True  # /_health
    metrics: bool = True  # /_metrics (web/metrics.py)
    access_log: bool = False  # one structured line per request
    log_format: str = "text"  # "text" (logfmt) or "json"

    # admission control (admission.py): renders at once per worker process (None: one
    # per core, 0: no admission) and the seconds a miss may expect to wait for a slot
    render_slots: int | None = None
    render_wait: float = 0.6
    # of those, how many may decode a whole original at once (None: any; `huimages serve`
    # sets cores / workers, so the node holds about one decoded photo per core)
    render_slots_per_process: int | None = None
    # misses one process lets wait for a slot (None: 48; the servers we run set their
    # threads minus HIT_THREADS); more are refused at once
    render_queue: int | None = None
    # What transparent pixels of an original become in a .jpeg variant (any CSS-like colour
    # Pillow's ImageColor reads: "#ffffff", "white", "rgb(0,0,0)"); other formats keep alpha.
    background: str = "#ffffff"
    # The change-feed follower (follower.py), one per node. None (not set) means: `huimages
    # serve` and `huimages fcgi` start one and /_health, /_metrics show it; a bare make_app
    # neither starts nor shows one. False: none (run `huimages follow` beside, or not at all).
    follow: bool | None = None
    follow_heartbeat: float = 5.0  # seconds; silent for 3 of them: /_health says stuck
    # Shared caches in front (docs/caching.md): the headers naming an answer's image ID,
    # the caches the follower purges a deleted image from (purges.py), and the token
    # webhook targets get.
    # Format by Accept (formats.accepted_format): a .jpeg variant URL answers AVIF or
    # WebP to a client that names it, in this order of preference, with Vary: Accept.
    auto_format: bool = False
    auto_formats: tuple[str, ...] = AUTO_FORMATS
    auto_focus: bool = True  # a computed focus_auto for crops (imaging/summary.py)
    surrogate_headers: tuple[str, ...] = ("Surrogate-Key",)
    purge: tuple[str, ...] = ()
    purge_token: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir).absolute())
        cache = Path(self.cache_dir) if self.cache_dir else self.data_dir / "cache"
        object.__setattr__(self, "cache_dir", cache.absolute())
        object.__setattr__(self, "presets", validate_presets(self.presets))
        if not self.server_url.endswith("/"):
            object.__setattr__(self, "server_url", self.server_url + "/")
        if not 1 <= self.jpeg_quality <= 95:
            raise ValueError("jpeg_quality must be between 1 and 95")
        if self.xsendfile is not None and self.xsendfile not in XSENDFILE_HEADERS:
            raise ValueError(f"xsendfile must be one of {sorted(XSENDFILE_HEADERS)}")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log_format must be one of {sorted(LOG_FORMATS)}")
        try:
            ImageColor.getrgb(self.background)
        except ValueError:
            raise ValueError(
                f"background must be a colour such as #ffffff, not {self.background!r}"
            ) from None
        if not self.follow_heartbeat > 0:
            raise ValueError("follow_heartbeat must be a positive number of seconds")
        if self.allowed_sizes is not None:
            object.__setattr__(self, "allowed_sizes", frozenset(self.allowed_sizes))
        check_pixel_limit(self.max_pixels)
        check_secret(self.upload_token, "upload_token")
        check_secret(self.secret, "secret")
        check_secret(self.purge_token, "purge_token")
        if self.max_scans < 1 or self.max_decode_bytes < 1:
            raise ValueError("max_scans and max_decode_bytes must be 1 or more")
        if self.render_slots is not None and self.render_slots < 0:
            raise ValueError("render_slots must be 0 (no limit) or more")
        if self.render_slots_per_process is not None and self.render_slots_per_process < 1:
            raise ValueError("render_slots_per_process must be 1 or more")
        if self.render_queue is not None and self.render_queue < 0:
            raise ValueError("render_queue must be 0 or more")
        if not 0 <= self.render_wait <= 600:
            raise ValueError("render_wait must be between 0 and 600 seconds")
        object.__setattr__(self, "surrogate_headers", tuple(self.surrogate_headers))
        for name in self.surrogate_headers:
            check_header_name(name)
        object.__setattr__(self, "auto_formats", tuple(self.auto_formats))
        if not self.auto_formats or not set(self.auto_formats) <= set(AUTO_FORMATS):
            raise ValueError(f"auto_formats must be some of {list(AUTO_FORMATS)}")
        object.__setattr__(self, "purge", tuple(self.purge))
        for target in self.purge:
            if not _PURGE_TARGET.fullmatch(target):
                raise ValueError(f"purge: {target!r} is none of xkey+http://HOST:PORT,"
                                 " ban+http://HOST:PORT, http(s)://webhook")

    @property
    def cache_root(self) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir

    def with_changes(self, **changes: Any) -> Config:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Read settings from the environment; keyword arguments win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}

        def first(*names: str) -> str | None:
            for name in names:
                if env.get(name):
                    return env[name]
            return None

        for name, (env_names, convert) in ENV_READERS.items():
            raw = first(*env_names)
            if raw is not None:
                try:
                    values[name] = convert(raw)
                except ValueError as exc:
                    raise ValueError(f"{env_names[0]}={raw!r}: {exc}") from exc
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown configuration keys: {sorted(unknown)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def export(self, env: MutableMapping[str, str]) -> None:
        """Write into ``env`` the variables ``from_env`` reads this configuration back
        from, for a process this one starts (a server's workers, the follower); those of
        settings left at None, and the older names, are removed, whatever ``env`` held.
        Presets read back merged over the defaults, as ``from_env`` always reads them."""
        for name, (env_names, _) in ENV_READERS.items():
            value = getattr(self, name)
            for other in env_names[1:]:
                env.pop(other, None)  # the first name speaks for the setting
            if value is None:
                env.pop(env_names[0], None)
            else:
                env[env_names[0]] = as_text(value)

    @classmethod
    def from_mapping(
        cls, settings: Mapping[str, str], environ: Mapping[str, str] | None = None
    ) -> Config:
        """Text settings keyed by field name (an ``.ini`` section) over the environment.

        Values are converted the way the matching environment variables are
        (``allowed_sizes = thumb, square``, ``max_upload_bytes = 10M`` ...), so
        one spelling works in both places; an empty value means "not set here".
        """
        values: dict[str, Any] = {}
        for name, raw in settings.items():
            if name not in ENV_READERS:
                raise TypeError(f"unknown configuration key {name!r}; known: {sorted(ENV_READERS)}")
            if raw is None or not str(raw).strip():
                continue
            try:
                values[name] = ENV_READERS[name][1](str(raw).strip())
            except ValueError as exc:
                raise ValueError(f"{name}={raw!r}: {exc}") from exc
        return cls.from_env(environ, **values)
