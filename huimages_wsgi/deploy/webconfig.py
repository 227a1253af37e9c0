"""Render the lighttpd / Apache / nginx front-end configurations.

The templates live in ``huimages_wsgi/deploy/templates/{lighttpd,apache,nginx}.conf``
(``contrib/`` links or shows them).  Each is a complete standalone config: the
web server serves ``<cache_dir>/<size>/<ID>.<ext>`` directly and forwards
misses to the app: the FastCGI backend (:func:`huimages_wsgi.fcgi.serve_fcgi`,
``huimages fcgi``) or, for nginx, also ``huimages serve`` (gunicorn) over HTTP.

Template lines starting with ``##`` are notes for whoever edits the template
and are dropped when rendering; ``##[fcgi]`` / ``##[proxy]`` ... ``##[end]``
enclose lines used with one kind of backend only.  The rendered file opens
with a header saying which command wrote it, for which paths.

:func:`render_config` is pure string work; the ``huimages config`` command
(cli/webconfig.py) also creates what the configuration names (rundirs.py).
"""

from __future__ import annotations

import os
import re
import shlex
from importlib import resources
from string import Template
from urllib.parse import urlsplit

from ..core.config import DEFAULT_MAX_UPLOAD_BYTES, DEFAULT_XACCEL_PREFIX, check_header_name
from .autoformat import auto_format_rules

__all__ = [
    "KINDS",
    "default_user_group",
    "parse_hostport",
    "parse_proxy_url",
    "render_config",
    "template_text",
]

KINDS = ("lighttpd", "apache", "nginx")
#: the servers that only talk FastCGI to the app (nginx can also proxy HTTP)
FCGI_ONLY_KINDS = ("lighttpd", "apache")

_BLOCK_RE = re.compile(r"^\s*##\[(\w+)\]\s*$")


class BracedTemplate(Template):
    """``string.Template`` that only substitutes ``${name}``.

    Web server configs are full of ``$HTTP[...]``, ``$1`` and regex anchors;
    with this pattern every dollar sign that is not ``${identifier}`` is plain
    text, so the templates need no ``$$`` escaping and stay valid-looking.
    """

    delimiter = "$"
    pattern = r"""
        \$(?:
            (?P<escaped>(?!))                      |  # no escape sequence
            (?P<named>(?!))                        |  # bare $name is literal
            \{(?P<braced>[a-z_][a-z0-9_]*)\}       |
            (?P<invalid>(?!))
        )
    """
    flags = re.VERBOSE  # case-sensitive: Apache's ${VAR} style stays untouched


def template_text(kind: str) -> str:
    """Return the raw template for ``kind`` ("lighttpd", "apache" or "nginx")."""
    _check_kind(kind)
    return (
        resources.files("huimages_wsgi.deploy")
        .joinpath("templates", f"{kind}.conf")
        .read_text(encoding="utf-8")
    )


def placeholders(kind: str) -> set[str]:
    """Names of the ``${...}`` placeholders used by the ``kind`` template."""
    found = set()
    for m in BracedTemplate.pattern.finditer(template_text(kind)):  # type: ignore[attr-defined]
        if m.group("braced"):
            found.add(m.group("braced"))
    return found


def default_user_group() -> tuple[str, str]:
    """User and group the web server should switch to.

    Started as root, both servers must drop privileges (Apache refuses to
    serve as root), so use Debian's ``www-data``.  Otherwise they cannot
    switch and the current user/group names are used (the directive is then
    ignored by lighttpd and Apache).
    """
    if os.geteuid() == 0:
        return "www-data", "www-data"
    import grp
    import pwd

    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = f"#{os.geteuid()}"
    try:
        group = grp.getgrgid(os.getegid()).gr_name
    except KeyError:
        group = f"#{os.getegid()}"
    return user, group


def strip_template_notes(text: str, blocks: frozenset[str] = frozenset()) -> str:
    """Drop the template's ``##`` note lines and the conditional blocks not in ``blocks``.

    ``##[name]`` opens a block kept only when ``name`` is in ``blocks``;
    ``##[end]`` closes it.  Leading blank lines left over are removed too.
    """
    kept: list[str] = []
    active: str | None = None
    for line in text.splitlines(keepends=True):
        marker = _BLOCK_RE.match(line)
        if marker:
            active = None if marker.group(1) == "end" else marker.group(1)
            continue
        if active is not None and active not in blocks:
            continue
        if line.lstrip().startswith("##"):
            continue
        kept.append(line)
    return "".join(kept).lstrip("\n")


def parse_proxy_url(value: str) -> str:
    """The nginx ``upstream`` server address for ``--proxy``.

    ``http://HOST:PORT`` (the app at the root, ``huimages serve``) or
    ``unix:/path/to/gunicorn.sock``; returns ``HOST:PORT`` or ``unix:PATH``.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"proxy must be a URL like http://127.0.0.1:8080, got {value!r}")
    value = value.strip()
    if value.startswith("unix:"):
        return "unix:" + _check_path(value[len("unix:"):], "proxy unix socket")
    parts = urlsplit(value)
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(
            f"proxy must look like http://HOST:PORT (the app at the root) or unix:/path, "
            f"got {value!r}"
        )
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"proxy port must be between 1 and 65535, got {value!r}") from None
    host = _check_word(parts.hostname, "proxy host")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_hostport(value: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[v6addr]:PORT`` for IPv6) into ``(host, port)``."""
    if not isinstance(value, str):
        raise ValueError(f"fcgi_bind must be a 'HOST:PORT' string, got {value!r}")
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\s\[\]]+):(\d+)", value.strip())
    if not m:
        raise ValueError(f"fcgi_bind must look like HOST:PORT (or [IPv6]:PORT), got {value!r}")
    host = m.group(1) or m.group(3)
    port = _check_port(m.group(2) or m.group(4), "fcgi_bind port")
    return host, port


def render_config(
    kind: str,
    cache_dir: str,
    port: int,
    run_dir: str,
    fcgi_socket: str | None = None,
    fcgi_bind: str | None = None,
    host: str = "127.0.0.1",
    user: str | None = None,
    group: str | None = None,
    proxy: str | None = None,
    xaccel_prefix: str = DEFAULT_XACCEL_PREFIX,
    max_body_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    surrogate_headers: tuple[str, ...] = ("Surrogate-Key",),
    auto_formats: tuple[str, ...] = (),
) -> str:
    """Return the complete ``kind`` config with every placeholder filled.

    ``kind`` is "lighttpd", "apache" or "nginx".  Exactly one backend must be
    given: ``fcgi_socket`` (path of the FastCGI backend's unix socket),
    ``fcgi_bind`` ("HOST:PORT" it listens on) or, for nginx only, ``proxy``
    (``http://HOST:PORT`` of ``huimages serve``, or ``unix:/path``).
    Relative paths are made absolute (the configs are run from anywhere).
    ``user``/``group`` default to :func:`default_user_group`.  nginx also
    uses ``xaccel_prefix`` (its internal location for ``X-Accel-Redirect``)
    and ``max_body_bytes`` (the largest upload it lets through to ``/_api``).
    ``surrogate_headers``: the headers that carry a static hit's image ID
    (HUIMAGES_SURROGATE_HEADERS; nginx and Apache, lighttpd cannot).
    ``auto_formats``: with HUIMAGES_AUTO_FORMAT, the formats a ``.jpeg`` variant is
    served in by Accept, the preferred first (autoformat.py); () for none.
    Raises ``ValueError`` with a readable message for bad arguments.
    """
    _check_kind(kind)
    _check_choice(kind, fcgi_socket, fcgi_bind, proxy, xaccel_prefix)
    port = _check_port(port, "port")
    cache_dir = _check_path(cache_dir, "cache_dir")
    run_dir = _check_path(run_dir, "run_dir")
    host = _check_word(host, "host")
    explicit_owner = (user, group)
    user, group = _owner(user, group)

    if kind == "nginx" and "$" in cache_dir + run_dir + (fcgi_socket or "") + (proxy or ""):
        raise ValueError("paths for nginx may not contain '$' (nginx would read a variable)")
    listen_host = f"[{host}]" if ":" in host else host
    command = ["huimages", "config", kind, "--cache-dir", cache_dir, "--port", str(port)]
    if host != "127.0.0.1":
        command += ["--host", host]
    command += ["--run-dir", run_dir]
    target, address, backend_options = _backend(kind, fcgi_socket, fcgi_bind, proxy)
    command += backend_options
    for option, value in zip(("--user", "--group"), explicit_owner, strict=True):
        if value is not None:
            command += [option, value]

    values = {
        "cache_dir": cache_dir,
        "run_dir": run_dir,
        "port": str(port),
        "host": listen_host,
        "user": user,
        "group": group,
        "fcgi_target": target,
        "backend_address": address,
        "xaccel_prefix": xaccel_prefix.rstrip("/"),
        "max_body_size": f"{-(-max(int(max_body_bytes), 1) // (1 << 20)) + 1}m",
        "surrogate_headers": _surrogate_lines(kind, surrogate_headers),
        "auto_format": auto_format_rules(kind, auto_formats, target),
        "command": shlex.join(command),
    }
    blocks = frozenset({"proxy" if proxy is not None else "fcgi"})
    text = strip_template_notes(template_text(kind), blocks)
    try:
        return BracedTemplate(text).substitute(values)
    except KeyError as exc:  # a placeholder in the template we do not know
        raise ValueError(f"template {kind}.conf uses unknown placeholder {exc}") from None


_SURROGATE_LINES = {
    "nginx": "            add_header {name} $huimages_image_id;",
    "apache": '    Header set {name} "%{{HUIMAGES_IMAGE_ID}}e" env=HUIMAGES_IMAGE_ID',
    "lighttpd": "",
}


def _surrogate_lines(kind: str, names: tuple[str, ...]) -> str:
    for name in names:
        check_header_name(name)
    line = _SURROGATE_LINES[kind]
    return "\n".join(line.format(name=name) for name in names) if line else ""


def _check_choice(
    kind: str, fcgi_socket: str | None, fcgi_bind: str | None, proxy: str | None,
    xaccel_prefix: str,
) -> None:
    """Exactly one backend, one that ``kind`` can talk to, and a plain X-Accel prefix."""
    if sum(target is not None for target in (fcgi_socket, fcgi_bind, proxy)) != 1:
        raise ValueError(
            "give exactly one of fcgi_socket (unix socket path), fcgi_bind (HOST:PORT)"
            + (" or proxy (http://HOST:PORT)" if kind == "nginx" else "")
        )
    if proxy is not None and kind in FCGI_ONLY_KINDS:
        raise ValueError(
            f"proxy is for nginx only; {kind} talks FastCGI to `huimages fcgi`: "
            "use fcgi_socket or fcgi_bind"
        )
    if not isinstance(xaccel_prefix, str) or not re.fullmatch(
        r"(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)+", xaccel_prefix.rstrip("/")
    ):
        raise ValueError(f"xaccel_prefix must be a plain URL path like /huimages-cache, "
                         f"got {xaccel_prefix!r}")


def _backend(
    kind: str, fcgi_socket: str | None, fcgi_bind: str | None, proxy: str | None
) -> tuple[str, str, list[str]]:
    """How ``kind`` reaches the app: its directive's target, the address for the
    header, and the ``huimages config`` options that name it."""
    options: list[str] = []
    target = ""
    if fcgi_socket is not None:
        sock = _check_path(fcgi_socket, "fcgi_socket")
        if "|" in sock:
            raise ValueError(f"fcgi_socket may not contain '|': {sock!r}")
        options += ["--fcgi-socket", sock]
        address = f"unix:{sock}"
        if kind == "lighttpd":
            target = f'"socket" => "{sock}"'
        else:
            target = f"unix:{sock}|fcgi://localhost"
    elif fcgi_bind is not None:
        fhost, fport = parse_hostport(fcgi_bind)
        fhost_url = f"[{fhost}]" if ":" in fhost else fhost
        options += ["--fcgi-bind", f"{fhost_url}:{fport}"]
        address = f"{fhost_url}:{fport}"
        if kind == "lighttpd":
            target = f'"host" => "{fhost}", "port" => {fport}'
        else:
            target = f"fcgi://{fhost_url}:{fport}"
    else:
        address = parse_proxy_url(proxy)  # type: ignore[arg-type]
        options += ["--proxy", proxy.strip()]  # type: ignore[union-attr]
    return target, address, options


def _owner(user: str | None, group: str | None) -> tuple[str, str]:
    """The user and group the server runs as when started as root, checked."""
    if user is None or group is None:
        default_user, default_group = default_user_group()
        user = user if user is not None else default_user
        group = group if group is not None else default_group
    return _check_word(user, "user"), _check_word(group, "group")


_BAD_CHARS = re.compile(r'["\\\x00-\x1f\x7f]')


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown web server kind {kind!r}; expected one of {', '.join(KINDS)}")


def _check_port(port: object, what: str) -> int:
    try:
        value = int(port)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an integer, got {port!r}") from None
    if isinstance(port, bool) or not 1 <= value <= 65535:
        raise ValueError(f"{what} must be between 1 and 65535, got {port!r}")
    return value


def _check_path(path: object, what: str) -> str:
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"{what} must be a non-empty path, got {path!r}")
    value = os.path.abspath(os.fspath(path))
    if _BAD_CHARS.search(value):
        raise ValueError(
            f"{what} may not contain quotes, backslashes or control characters: {value!r}"
        )
    return value


def _check_word(value: object, what: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.:#-]+", value):
        raise ValueError(f"{what} must be a plain name/address, got {value!r}")
    return value
