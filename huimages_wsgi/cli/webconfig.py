"""``huimages config``: print a lighttpd, Apache or nginx configuration for this node."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Any

from ..core.config import DEFAULT_MAX_UPLOAD_BYTES, DEFAULT_XACCEL_PREFIX
from ..core.formats import CONTENT_TYPES
from ..deploy.rundirs import ensure_cache_dir, ensure_run_dir, ensure_unavailable_page
from ..deploy.webconfig import (
    KINDS,
    default_user_group,
    render_config,
)


def add_config_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``config`` sub-command to an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "config",
        help="print a lighttpd/Apache/nginx config serving the cache and forwarding misses",
        description=(
            "Render a complete lighttpd, Apache or nginx configuration whose document root "
            "is the image cache; cache misses go to the app (FastCGI: `huimages fcgi`; "
            "nginx can also proxy to `huimages serve`). Creates the run directory."
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
    target.add_argument(
        "--proxy",
        metavar="URL",
        help="nginx only: http://HOST:PORT of `huimages serve` (gunicorn), via proxy_pass",
    )
    p.add_argument(
        "--run-dir",
        help="directory for pid file and logs, created if missing (as is the cache dir) "
        "(default: 'run' next to the cache dir)",
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
    :class:`huimages_wsgi.Config`) is used, as are its ``xaccel_prefix`` and
    ``max_upload_bytes`` for nginx.  The run directory is created (owned by
    the server's user when run as root), and so is a missing cache directory
    (Apache will not start without its DocumentRoot); when that is not
    possible the command to run is printed on stderr.
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
            proxy=getattr(args, "proxy", None),
            xaccel_prefix=getattr(config, "xaccel_prefix", DEFAULT_XACCEL_PREFIX),
            max_body_bytes=getattr(config, "max_upload_bytes", DEFAULT_MAX_UPLOAD_BYTES),
            surrogate_headers=getattr(config, "surrogate_headers", ("Surrogate-Key",)),
            auto_formats=tuple(ext for ext in getattr(config, "auto_formats", ())
                               if getattr(config, "auto_format", False) and ext in CONTENT_TYPES),
        )
    except ValueError as exc:
        print(f"huimages config: error: {exc}", file=sys.stderr)
        return 2
    prepare_dirs(args, os.path.abspath(cache_dir), os.path.abspath(run_dir))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


def prepare_dirs(args: argparse.Namespace, cache_dir: str, run_dir: str) -> None:
    """Create the cache and run directories (and lighttpd's 503 page) the rendered file
    names; what cannot be done is printed on stderr with the command that does it."""
    try:
        note = ensure_cache_dir(cache_dir)
    except OSError as exc:
        print(
            f"huimages config: cannot create the cache directory {cache_dir} ({exc.strerror}); "
            f"create it with:\n  install -d -m 0755 {shlex.quote(cache_dir)}",
            file=sys.stderr,
        )
    else:
        if note:
            print(f"huimages config: {note}", file=sys.stderr)
    try:
        note = ensure_run_dir(run_dir, args.user, args.group)
    except (OSError, KeyError) as exc:
        user, group = default_user_group()
        owner = (
            f" -o {args.user or user} -g {args.group or group}" if os.geteuid() == 0 else ""
        )
        reason = exc.strerror if isinstance(exc, OSError) else f"no such user or group {exc}"
        print(
            f"huimages config: cannot create the run directory {run_dir} ({reason}); "
            f"create it with:\n  install -d -m 0755{owner} {shlex.quote(run_dir)}",
            file=sys.stderr,
        )
    else:
        if note:
            print(f"huimages config: {note}", file=sys.stderr)
        if args.kind == "lighttpd":
            try:
                note = ensure_unavailable_page(run_dir)
            except OSError as exc:
                note = (f"cannot write {run_dir}/unavailable.txt ({exc.strerror}): lighttpd"
                        " answers 404 for it while the app is unreachable; write it by hand")
            if note:
                print(f"huimages config: {note}", file=sys.stderr)


def add_parsers(commands: Any) -> None:
    """The ``config`` command."""
    add_config_parser(commands)
