"""The one configuration object.

Built once, from keyword arguments and/or the environment (including the
historic huImages variables), then passed down explicitly. Nothing below the
CLI reads ``os.environ`` for settings, so two differently configured stores
can live in one process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from PIL import Image, ImageColor

from .sizes import DEFAULT_PRESETS, validate_presets

XSENDFILE_HEADERS = {"x-sendfile": "X-Sendfile", "x-accel-redirect": "X-Accel-Redirect"}
LOG_FORMATS = ("text", "json")

# The limits, defined once; the engine's own default refers to DEFAULT_MAX_PIXELS.
DEFAULT_MAX_DIMENSION = 4096  # widest or tallest variant a URL may ask for
# Pillow's own decompression-bomb threshold (a quarter GiB decoded at 3 bytes per
# pixel), adopted on purpose so that the two guards agree: 89.5 megapixels holds
# every common camera. HUIMAGES_MAX_PIXELS may go up to twice Pillow's threshold, where
# Pillow only warns (and we decide); beyond, Pillow refuses before we see the size, and
# changing its process-wide threshold is the host application's call, not ours.
DEFAULT_MAX_PIXELS = 89_478_485
DEFAULT_MAX_UPLOAD_BYTES = 50 << 20
# libjpeg-turbo's djpeg -maxscans idea: each scan of a progressive JPEG is another pass
# over every block, and encoders write about 10 (at most a few dozen).
DEFAULT_MAX_SCANS = 100
# The memory one decode may take, by the estimate from its header (imaging/bounds.py):
# a 30 MP WebP (the costliest format a pixel) fits, and a baseline RGB JPEG at the pixel limit.
DEFAULT_MAX_DECODE_BYTES = 512 << 20
#: The internal location nginx serves the cache under for X-Accel-Redirect.
DEFAULT_XACCEL_PREFIX = "/huimages-cache"


def _parse_presets(text: str) -> dict[str, str]:
    """``"thumb=50x200,square=75x75!"`` -> mapping; merged over the defaults."""
    table = dict(DEFAULT_PRESETS)
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, box = item.partition("=")
        table[name.strip()] = box.strip()
    return table


def _parse_bool(text: str) -> bool:
    return text.strip().lower() in {"1", "true", "yes", "on"}


def parse_bytes(text: str) -> int:
    """Accept ``1048576``, ``512K``, ``10M``, ``2G``."""
    text = text.strip().upper().rstrip("B")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def check_pixel_limit(max_pixels: int) -> None:
    """ValueError for a pixel limit Pillow itself would refuse images under."""
    pillow = Image.MAX_IMAGE_PIXELS
    if max_pixels < 1 or (pillow is not None and max_pixels > 2 * pillow):
        raise ValueError(
            f"max_pixels must be between 1 and {2 * pillow if pillow else 'any'}: twice"
            " Pillow's Image.MAX_IMAGE_PIXELS, above which Pillow refuses an image itself")


def _as_text(value: Any) -> str:
    """A setting as ``ENV_READERS`` reads it back."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (frozenset, set)):
        return ",".join(sorted(value))
    if isinstance(value, Mapping):
        return ",".join(f"{name}={box}" for name, box in value.items())
    return str(value)


def _parse_names(text: str) -> frozenset[str]:
    return frozenset(s.strip() for s in text.split(",") if s.strip())


#: Config field -> (environment variables, first set one wins; converter from text).
ENV_READERS: dict[str, tuple[tuple[str, ...], Callable[[str], Any]]] = {
    "data_dir": (("HUIMAGES_DATA_DIR",), Path),
    "cache_dir": (("HUIMAGES_CACHE_DIR",), Path),
    "server_url": (("IMAGESERVERURL",), str),
    "alt_addition": (("HUIMAGESALTADDITION",), str),
    "presets": (("HUIMAGES_PRESETS",), _parse_presets),
    "jpeg_quality": (("HUIMAGES_JPEG_QUALITY",), int),
    "s3_bucket": (("HUIMAGES3BUCKET", "S3BUCKET"), str),
    "s3_create_bucket": (("HUIMAGES_S3_CREATE_BUCKET",), _parse_bool),
    "couch_server": (("HUIMAGESCOUCHSERVER", "COUCHSERVER"), str),
    "couch_db": (("HUIMAGES_COUCHDB_NAME",), str),
    "backend_timeout": (("HUIMAGES_BACKEND_TIMEOUT",), float),
    "secret": (("HUIMAGES_SECRET",), str),
    "allowed_sizes": (("HUIMAGES_ALLOWED_SIZES",), _parse_names),
    "max_dimension": (("HUIMAGES_MAX_DIMENSION",), int),
    "max_pixels": (("HUIMAGES_MAX_PIXELS",), int),
    "max_upload_bytes": (("HUIMAGES_MAX_UPLOAD_BYTES",), parse_bytes),
    "max_scans": (("HUIMAGES_MAX_SCANS",), int),
    "max_decode_bytes": (("HUIMAGES_MAX_DECODE_BYTES",), parse_bytes),
    "lock_timeout": (("HUIMAGES_LOCK_TIMEOUT",), float),
    "xsendfile": (("HUIMAGES_XSENDFILE",), str.lower),
    "xaccel_prefix": (("HUIMAGES_XACCEL_PREFIX",), str),
    "upload_token": (("HUIMAGES_UPLOAD_TOKEN",), str),
    "api_url": (("HUIMAGES_API_URL",), str),
    "browse": (("HUIMAGES_BROWSE",), _parse_bool),
    "health": (("HUIMAGES_HEALTH",), _parse_bool),
    "metrics": (("HUIMAGES_METRICS",), _parse_bool),
    "access_log": (("HUIMAGES_ACCESS_LOG",), _parse_bool),
    "log_format": (("HUIMAGES_LOG_FORMAT",), str.lower),
    "render_slots": (("HUIMAGES_RENDER_SLOTS",), int),
    "render_wait": (("HUIMAGES_RENDER_WAIT",), float),
    "render_slots_per_process": (("HUIMAGES_RENDER_SLOTS_PER_PROCESS",), int),
    "render_queue": (("HUIMAGES_RENDER_QUEUE",), int),
    "background": (("HUIMAGES_BACKGROUND",), str.strip),
    "follow": (("HUIMAGES_FOLLOW",), _parse_bool),
    "follow_heartbeat": (("HUIMAGES_FOLLOW_HEARTBEAT",), float),
}


#: Config field -> (default as a person reads it, meaning): the configuration reference in
#: docs/configuration.md is generated from this and ENV_READERS (scripts/config-reference),
#: and a test keeps the two identical, so the documentation cannot drift from the code.
SETTINGS_HELP: dict[str, tuple[str, str]] = {
    "data_dir": ("`./huimages-data`", "originals (`originals/`), SQLite catalog, default cache"),
    "cache_dir": ("`<data dir>/cache`", "the derivative cache (webserver document root)"),
    "server_url": ("`http://127.0.0.1:8080/`", "base of the URLs the client builds"),
    "alt_addition": ("empty", "appended to the alt text of `scaled_tag`"),
    "presets": ("the original table", "e.g. `hero=1200x400!,thumb=60x60` (merged over the"
                " defaults)"),
    "jpeg_quality": ("85", "quality of generated JPEGs"),
    "s3_bucket": ("unset", "keep originals in this S3 bucket"),
    "s3_create_bucket": ("off", "create the bucket if it is missing"),
    "couch_server": ("unset", "keep the catalog in CouchDB (credentials in the URL allowed)"),
    "couch_db": ("`huimages`", "the CouchDB database"),
    "backend_timeout": ("10", "seconds before a backend call gives up (then 503)"),
    "secret": ("unset", "require signed URLs to generate variants"),
    "allowed_sizes": ("unset", "comma-separated allow-list of sizes/presets"),
    "max_dimension": ("4096", "largest width or height a URL may ask for"),
    "max_pixels": (str(DEFAULT_MAX_PIXELS), "largest original (Pillow's bomb-guard threshold;"
                   " at most twice it)"),
    "max_upload_bytes": ("50M", "largest upload"),
    "max_scans": (str(DEFAULT_MAX_SCANS), "most scans a progressive JPEG may have (counted"
                  " from its markers; more: refused before decoding)"),
    "max_decode_bytes": ("512M", "most memory one decode may need, estimated from the header"
                         " before a pixel is decoded (docs/formats.md); more: refused"),
    "lock_timeout": ("30", "seconds a request waits for another worker generating the same"
                     " variant"),
    "xsendfile": ("unset", "`x-sendfile` or `x-accel-redirect`: let the webserver send the"
                  " file"),
    "xaccel_prefix": ("`/huimages-cache`", "the internal location X-Accel-Redirect names"
                      " (nginx)"),
    "upload_token": ("unset", "bearer token for the HTTP API (`/_api`); unset: uploads over"
                     " HTTP disabled"),
    "api_url": ("unset", "client library and CLI use this server's HTTP API instead of the"
                " backends"),
    "browse": ("on in `huimages serve` without S3/CouchDB, else off", "the browse page at"
               " `/_browse/` (`1`/`0`)"),
    "health": ("on", "`/_health` (`1`/`0`)"),
    "metrics": ("on", "`/_metrics`, a server's processes counting together (docs/operations.md)"
                        " (`1`/`0`)"),
    "access_log": ("off", "one structured line per request (also `huimages serve"
                   " --access-log`)"),
    "log_format": ("`text`", "`text` (logfmt) or `json`"),
    "render_slots": ("one per core", "renders at once per worker process (admission"
                     " control; `0`: no admission at all, every miss renders at once)"),
    "render_wait": ("0.6", "seconds a miss may expect to wait for a render slot; beyond,"
                    " a 503 with Retry-After at once"),
    "render_slots_per_process": ("cores / workers in `huimages serve`, else the slots",
                                 "of those, how many may decode a whole original at once"
                                 " (each holds a decoded photo: bounds a worker's memory)"),
    "render_queue": ("threads - 16 in `huimages serve` and `gunicorn -c`, else 48",
                     "misses one worker process lets wait for a slot (each holds a server"
                     " thread: keep some threads for hits); more get a 503 at once"),
    "follow": ("on in `huimages serve` and `huimages fcgi`", "the node's change-feed follower"
               " that purges variants of images deleted anywhere (`0`: none; docs/cluster.md)"),
    "follow_heartbeat": ("5", "seconds between the follower's heartbeats; silent for 3 of"
                         " them: `/_health` says stuck"),
    "background": ("`#ffffff`", "what transparent pixels become in `.jpeg` variants (any CSS"
                   " colour Pillow reads); other formats keep alpha"),
}


def reference_table() -> str:
    """The Markdown table of every setting, in ENV_READERS order (docs/configuration.md)."""
    lines = ["| variable | setting | default | meaning |", "| --- | --- | --- | --- |"]
    for name, (env_names, _convert) in ENV_READERS.items():
        default, meaning = SETTINGS_HELP[name]
        variables = ", ".join(f"`{env}`" for env in env_names)
        lines.append(f"| {variables} | `{name}` | {default} | {meaning} |")
    return "\n".join(lines) + "\n"


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
                env[env_names[0]] = _as_text(value)

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
