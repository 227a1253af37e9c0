"""The settings: their defaults, the variables each is read from, and what each means.

``ENV_READERS`` says which environment variables set a field of ``Config``
(the first set one wins) and how its text is read; ``SETTINGS_HELP`` what the
field means, from which ``reference_table`` writes the table in
docs/configuration.md (scripts/config-reference), so the documentation cannot
drift from the code. ``Config`` (config.py) is built from these.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .sizes import DEFAULT_PRESETS

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
#: The shortest upload token or URL secret accepted: a guessable one protects nothing.
MIN_SECRET_LENGTH = 16


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


def as_text(value: Any) -> str:
    """A setting as ``ENV_READERS`` reads it back."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (frozenset, set)):
        return ",".join(sorted(value))
    if isinstance(value, Mapping):
        return ",".join(f"{name}={box}" for name, box in value.items())
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    return str(value)


def _parse_names(text: str) -> frozenset[str]:
    return frozenset(s.strip() for s in text.split(",") if s.strip())


def _parse_list(text: str) -> tuple[str, ...]:
    """``"a, b c"`` -> ``("a", "b", "c")``; ``none`` -> ``()``."""
    items = tuple(item for item in text.replace(",", " ").split() if item)
    return () if items == ("none",) else items


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
    "surrogate_headers": (("HUIMAGES_SURROGATE_HEADERS",), _parse_list),
    "purge": (("HUIMAGES_PURGE",), _parse_list),
    "purge_token": (("HUIMAGES_PURGE_TOKEN",), str),
    "auto_format": (("HUIMAGES_AUTO_FORMAT",), _parse_bool),
    "auto_focus": (("HUIMAGES_AUTO_FOCUS",), _parse_bool),
    "auto_formats": (("HUIMAGES_AUTO_FORMATS",), _parse_list),
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
    "secret": ("unset", "require signed URLs to generate variants (at least 16 characters)"),
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
    "upload_token": ("unset", "bearer token for the HTTP API (`/_api`), `/_browse` and the"
                     " detail of `/_health` (at least 16 characters); unset: uploads over"
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
    "surrogate_headers": ("`Surrogate-Key`", "the headers that name an image answer's image"
                          " ID for a shared cache to purge by (`xkey`, `Cache-Tag`; `none`)"),
    "purge": ("unset", "shared caches to purge an image from when it is deleted:"
              " `xkey+http://varnish:6081`, `ban+http://...`, or a webhook URL"
              " (docs/caching.md)"),
    "purge_token": ("unset", "sent as `Authorization: Bearer` to webhook purge targets"),
    "auto_format": ("off", "a `.jpeg` variant URL answers in a format the client's `Accept`"
                    " names, with `Vary: Accept` (`1`/`0`; docs/formats.md)"),
    "auto_formats": ("`avif,webp`", "those formats, the preferred first"),
    "auto_focus": ("on", "find where an upload's subject is, for crops without a set focus"
                   " (`0`: crops of those centre on the middle; docs/formats.md)"),
}


def reference_table() -> str:
    """The Markdown table of every setting, in ENV_READERS order (docs/configuration.md)."""
    lines = ["| variable | setting | default | meaning |", "| --- | --- | --- | --- |"]
    for name, (env_names, _convert) in ENV_READERS.items():
        default, meaning = SETTINGS_HELP[name]
        variables = ", ".join(f"`{env}`" for env in env_names)
        lines.append(f"| {variables} | `{name}` | {default} | {meaning} |")
    return "\n".join(lines) + "\n"
