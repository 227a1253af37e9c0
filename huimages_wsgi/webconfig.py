"""Render the lighttpd / Apache front-end configurations.

The templates live in ``huimages_wsgi/templates/{lighttpd,apache}.conf``
(symlinked from ``contrib/``).  Each is a complete standalone config: the web
server serves ``<cache_dir>/<size>/<ID>.<ext>`` directly and forwards misses
to the FastCGI backend (:func:`huimages_wsgi.fcgi.serve_fcgi`).

Rendering is pure string work; nothing here touches the file system except
reading the packaged template.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from importlib import resources
from string import Template

__all__ = [
    "KINDS",
    "add_config_parser",
    "default_user_group",
    "parse_hostport",
    "render_config",
    "run_config",
    "template_text",
]

KINDS = ("lighttpd", "apache")


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
    """Return the raw template for ``kind`` ("lighttpd" or "apache")."""
    _check_kind(kind)
    return (
        resources.files("huimages_wsgi")
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
) -> str:
    """Return the complete ``kind`` config with every placeholder filled.

    ``kind`` is "lighttpd" or "apache".  Exactly one of ``fcgi_socket`` (path
    of the backend's unix socket) or ``fcgi_bind`` ("HOST:PORT" it listens on)
    must be given.  Relative paths are made absolute (the configs are run
    from anywhere).  ``user``/``group`` default to :func:`default_user_group`.
    Raises ``ValueError`` with a readable message for bad arguments.
    """
    _check_kind(kind)
    if (fcgi_socket is None) == (fcgi_bind is None):
        raise ValueError(
            "give exactly one of fcgi_socket (unix socket path) or fcgi_bind (HOST:PORT)"
        )
    port = _check_port(port, "port")
    cache_dir = _check_path(cache_dir, "cache_dir")
    run_dir = _check_path(run_dir, "run_dir")
    host = _check_word(host, "host")
    if user is None or group is None:
        default_user, default_group = default_user_group()
        user = user if user is not None else default_user
        group = group if group is not None else default_group
    user = _check_word(user, "user")
    group = _check_word(group, "group")

    listen_host = f"[{host}]" if ":" in host else host
    if fcgi_socket is not None:
        sock = _check_path(fcgi_socket, "fcgi_socket")
        if "|" in sock:
            raise ValueError(f"fcgi_socket may not contain '|': {sock!r}")
        if kind == "lighttpd":
            target = f'"socket" => "{sock}"'
        else:
            target = f"unix:{sock}|fcgi://localhost"
    else:
        fhost, fport = parse_hostport(fcgi_bind)  # type: ignore[arg-type]
        if kind == "lighttpd":
            target = f'"host" => "{fhost}", "port" => {fport}'
        else:
            fhost_url = f"[{fhost}]" if ":" in fhost else fhost
            target = f"fcgi://{fhost_url}:{fport}"

    values = {
        "cache_dir": cache_dir,
        "run_dir": run_dir,
        "port": str(port),
        "host": listen_host,
        "user": user,
        "group": group,
        "fcgi_target": target,
    }
    try:
        return BracedTemplate(template_text(kind)).substitute(values)
    except KeyError as exc:  # a placeholder in the template we do not know
        raise ValueError(f"template {kind}.conf uses unknown placeholder {exc}") from None


# --------------------------------------------------------------------- CLI


def add_config_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``config`` sub-command to an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "config",
        help="print a lighttpd/Apache config serving the cache and forwarding misses via FastCGI",
        description=(
            "Render a complete lighttpd or Apache configuration whose document root is the "
            "image cache; cache misses go to the FastCGI backend."
        ),
    )
    p.add_argument("kind", choices=KINDS)
    # SUPPRESS: do not clobber a top-level --cache-dir with None when omitted here
    p.add_argument(
        "--cache-dir",
        default=argparse.SUPPRESS,
        help="image cache directory = document root (default: the configured cache dir)",
    )
    p.add_argument("--port", required=True, type=int, help="port the web server listens on")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--fcgi-socket", metavar="PATH", help="unix socket of the FastCGI backend")
    target.add_argument(
        "--fcgi-bind", metavar="HOST:PORT", help="TCP address of the FastCGI backend"
    )
    p.add_argument(
        "--run-dir",
        help="directory for pid file and logs (default: 'run' next to the cache dir)",
    )
    p.add_argument("--user", help="user to run as when started as root (default www-data)")
    p.add_argument("--group", help="group to run as when started as root (default www-data)")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.set_defaults(handler=run_config, func=run_config)
    return p


def run_config(args: argparse.Namespace, config: object | None = None) -> int:
    """Handle ``huimages config``; returns the process exit code.

    Works as ``handler(args, config)`` (the CLI's convention) or ``func(args)``.
    Without ``--cache-dir`` the cache dir of ``config`` (a
    :class:`huimages_wsgi.Config`) is used.
    """
    cache_dir = getattr(args, "cache_dir", None) or getattr(config, "cache_dir", None)
    if not cache_dir:
        print("huimages config: error: --cache-dir is required", file=sys.stderr)
        return 2
    cache_dir = os.fspath(cache_dir)
    run_dir = args.run_dir or os.path.join(
        os.path.dirname(os.path.abspath(cache_dir).rstrip(os.sep)), "run"
    )
    try:
        text = render_config(
            args.kind,
            cache_dir=cache_dir,
            port=args.port,
            run_dir=run_dir,
            fcgi_socket=args.fcgi_socket,
            fcgi_bind=args.fcgi_bind,
            host=args.host,
            user=args.user,
            group=args.group,
        )
    except ValueError as exc:
        print(f"huimages config: error: {exc}", file=sys.stderr)
        return 2
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


# ----------------------------------------------------------------- helpers

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
