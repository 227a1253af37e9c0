"""The ``huimages`` command: a thin front over ImageStore and the WSGI app.

The configuration is built once here, from the environment and the options,
and passed down; gunicorn workers receive it ready-made. Each command lives in
the module of its kind (serving, images, bulk, webconfig), which adds its own
sub-parser.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from ..core.config import Config
from ..core.errors import HuImagesError
from ..imaging.decode import silence_bomb_warnings
from ..web.logs import configure_logging
from . import bulk, images, serving, webconfig

COMMAND_MODULES = (serving, webconfig, images, bulk)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="huimages",
        description="Store image originals and serve them at any size.",
        epilog="Configuration comes from the environment (HUIMAGES_DATA_DIR, IMAGESERVERURL, ...)"
        " and the options before the command.",
    )
    parser.add_argument("--data-dir", help="data directory (HUIMAGES_DATA_DIR)")
    parser.add_argument("--cache-dir", help="cache directory (HUIMAGES_CACHE_DIR)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for module in COMMAND_MODULES:
        module.add_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # a server command may start this process again only when it is this process's own
    # command line (the huimages script, python -m, a zipapp), never for a caller of main
    args.own_process = argv is None
    configure_logging(verbose=args.verbose)
    silence_bomb_warnings()
    try:
        overrides: dict[str, Any] = {"data_dir": args.data_dir, "cache_dir": args.cache_dir}
        config = Config.from_env(**overrides)
        configure_logging(config.log_format, verbose=args.verbose)
        return args.handler(args, config)
    except HuImagesError as exc:
        print(f"huimages: {exc}", file=sys.stderr)
        return 2 if exc.status in (400, 404) else 1
    except (ValueError, OSError) as exc:
        print(f"huimages: {exc}", file=sys.stderr)
        return 1

