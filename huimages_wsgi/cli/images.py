"""``huimages put``, ``info``, ``url``, ``delete`` and ``purge``: one image at a time."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..core.config import Config
from ..core.errors import ImageNotFound
from ..store import open_store
from ..store.focus import set_focus
from ..web.api import deletion_answer
from .options import Progress, add_jobs, parse_references


def cmd_put(args: argparse.Namespace, config: Config) -> int:
    from ..node.parallel import put_step, run_jobs

    options = {"title": args.title or "", "references": parse_references(args.reference),
               "typ": args.type or ""}
    progress = Progress(len(args.files), "uploading", force=args.progress)
    failures = 0
    items = [(name, options) for name in args.files]
    try:
        for (name, _), (ok, text) in run_jobs(config, open_store, put_step, items, args.jobs):
            if ok:
                print(text, flush=True)
            else:
                failures += 1
                print(f"huimages: {name}: {text}", file=sys.stderr)
            progress.step(Path(name).name)
    except KeyboardInterrupt:
        print(f"\nhuimages: interrupted after {progress.done} of {len(items)} file(s);"
              " run it again to upload the rest (uploads are idempotent)", file=sys.stderr)
        return 130
    return 1 if failures else 0


def cmd_info(args: argparse.Namespace, config: Config) -> int:
    from ..store.broken import explain_missing

    store = open_store(config)
    try:
        doc = store.get_imagedoc(args.id)
    except ImageNotFound as exc:
        raise ImageNotFound(explain_missing(store, args.id) or str(exc)) from None
    json.dump(doc, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")
    return 0


def cmd_url(args: argparse.Namespace, config: Config) -> int:
    """The URL of one variant, signed for its size and format when a secret is set."""
    store = open_store(config)
    store.get_imagedoc(args.id)
    if args.size == "o" and args.ext == "jpeg":  # the original, at its own type's extension
        print(store.imageurl(args.id))
    else:
        print(store.scaled_imageurl(args.id, args.size, args.ext))
    return 0


def cmd_delete(args: argparse.Namespace, config: Config) -> int:
    answer = open_store(config).delete_image(args.id)
    print(deletion_notice(args.id, answer, config))
    return 0


def cmd_focus(args: argparse.Namespace, config: Config) -> int:
    """Set or clear where the image's crops are centred (store/focus.py)."""
    if args.clear == (args.x is not None or args.y is not None) or (args.x is None) != (
            args.y is None):
        print("huimages focus: give X Y (fractions, 0 to 1) or --clear", file=sys.stderr)
        return 2
    doc = set_focus(open_store(config), args.id, args.x, args.y)
    point = doc.get("focus")
    print(f"{args.id}: crops centre on {point[0]:g}, {point[1]:g}" if point
          else f"{args.id}: crops centre on the middle")
    return 0


def cmd_purge(args: argparse.Namespace, config: Config) -> int:
    store = open_store(config)
    total = sum(store.purge(imageid) for imageid in args.ids)
    print(f"removed {total} cached file(s)")
    return 0


def deletion_notice(imageid: str, answer: Any, config: Config) -> str:
    """One human paragraph from a local delete (files removed) or the API's answer."""
    if not isinstance(answer, dict):
        answer = deletion_answer(imageid, int(answer or 0), config)
    removed = (answer.get("this_node_cache") or {}).get("files_removed", 0)
    return (
        f"deleted {imageid}: gone from the store; {removed} cached file(s) removed on this"
        f" node. {str(answer.get('other_nodes', '')).capitalize()}."
    )


def add_parsers(commands: Any) -> None:
    """The commands on images."""
    put = commands.add_parser("put", help="upload originals, print one ID per line")
    put.add_argument("files", nargs="+", metavar="FILE")
    put.add_argument("--title")
    put.add_argument("--reference", action="append", default=[], metavar="KEY=VALUE")
    put.add_argument("--type", help="image type, e.g. product_image")
    put.add_argument("--progress", action="store_true", help="show progress even if not a tty")
    add_jobs(put)
    put.set_defaults(handler=cmd_put)

    info = commands.add_parser("info", help="print an image's metadata as JSON")
    info.add_argument("id")
    info.set_defaults(handler=cmd_info)

    url = commands.add_parser("url", help="print an image's URL")
    url.add_argument("id")
    url.add_argument("--size", default="o")
    url.add_argument("--ext", default="jpeg", choices=("jpeg", "webp", "avif", "png"),
                     help="the format (a signature covers it: one URL per format)")
    url.set_defaults(handler=cmd_url)

    delete = commands.add_parser(
        "delete", help="delete an image: from the store and this node's cache at once,"
        " from other nodes' caches by their followers")
    delete.add_argument("id")
    delete.set_defaults(handler=cmd_delete)

    focus = commands.add_parser(
        "focus", help="centre an image's crops on X Y (fractions of the image, 0 to 1)")
    focus.add_argument("id")
    focus.add_argument("x", nargs="?", type=float)
    focus.add_argument("y", nargs="?", type=float)
    focus.add_argument("--clear", action="store_true", help="centre them on the middle again")
    focus.set_defaults(handler=cmd_focus)

    purge = commands.add_parser("purge", help="remove an image's cached variants on this node")
    purge.add_argument("ids", nargs="+", metavar="ID")
    purge.set_defaults(handler=cmd_purge)
