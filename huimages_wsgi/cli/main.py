"""The ``huimages`` command: a thin front over ImageStore and the WSGI app.

The configuration is built once here, from the environment and the options,
and passed down; gunicorn workers receive it ready-made.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from ..core.config import Config, parse_bytes
from ..core.errors import HuImagesError, ImageNotFound
from ..deploy.webconfig import add_config_parser
from ..node.parallel import default_jobs, parse_shard
from ..store import open_store
from ..store.batch import FAILED
from ..store.imagestore import ImageStore
from ..web.logs import configure_logging


class Progress:
    """A one-line progress bar on stderr; silent when stderr is not a terminal
    unless asked, so scripts and logs are not flooded."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, force: bool = False):
        stream = stream or sys.stderr
        self.total, self.label, self.stream = total, label, stream
        self.enabled = total > 1 and (force or stream.isatty())
        self.done = 0
        self.started = time.monotonic()

    def step(self, note: str = "") -> None:
        self.done += 1
        if not self.enabled:
            return
        width = 30
        filled = width * self.done // self.total
        bar = "#" * filled + "-" * (width - filled)
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate else 0.0
        self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total} {rate:.1f}/s"
                          f" ETA {eta:4.0f}s {note[:30]:<30}")
        if self.done == self.total:
            self.stream.write("\n")
        self.stream.flush()


def local_store(config: Config, command: str) -> ImageStore:
    """The store over the backends, for the commands that must run next to them."""
    if config.api_url:
        raise SystemExit(f"huimages: {command} runs next to the backends, not over"
                         " HUIMAGES_API_URL")
    return ImageStore(config)


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from ..deploy.server import run_gunicorn

    if config.browse is None:  # HUIMAGES_BROWSE unset: on for the embedded default only
        config = config.with_changes(browse=not (config.s3_bucket or config.couch_server))
    if args.access_log:
        config = config.with_changes(access_log=True)
    if config.follow is None:  # HUIMAGES_FOLLOW unset: the node's follower runs in the master
        config = config.with_changes(follow=True)
    run_gunicorn(
        config,
        host=args.host,
        port=args.port,
        workers=args.workers,
        timeout=args.timeout,
        threads=args.threads,
    )
    return 0


def cmd_fcgi(args: argparse.Namespace, config: Config) -> int:
    from ..deploy.fcgi import serve_fcgi
    from ..deploy.webconfig import parse_hostport
    from ..web.app import make_app

    bind = parse_hostport(args.bind) if args.bind else None
    if config.follow is None:  # HUIMAGES_FOLLOW unset: the node's follower runs beside
        config = config.with_changes(follow=True)
    options: dict[str, Any] = {}
    if args.umask is not None:
        options["umask"] = args.umask
    if args.max_workers is not None and args.forking:
        # flup raises maxChildren to maxSpare (5) unless told otherwise
        options.update(maxChildren=args.max_workers, maxSpare=min(5, args.max_workers))
    elif args.max_workers is not None:
        options["maxThreads"] = args.max_workers
    app = make_app(config)  # a bad configuration fails here, before listening
    where = args.socket or args.bind
    mode = "forking" if args.forking else "threaded"
    print(f"huimages fcgi: serving {config.cache_root} on {where} ({mode})", file=sys.stderr)
    from ..node.follower import start_follower_process, stop_follower_process

    follower = start_follower_process(config)  # one per node, beside flup's threads or forks
    try:
        serve_fcgi(app, socket_path=args.socket, bind=bind, threaded=not args.forking, **options)
    finally:
        stop_follower_process(follower)
    return 0


def cmd_follow(args: argparse.Namespace, config: Config) -> int:
    from ..node.follower import follower_status, run_follower

    if not args.status:
        run_follower(config, parent=args.parent)
        return 0
    status = follower_status(config)
    if status is None:
        print(f"no follower ever ran for {config.cache_root}", file=sys.stderr)
        return 1
    catalog_seq = local_store(config, "follow --status").catalog.update_seq()
    from ..storage.base import seq_number

    status["catalog_seq"] = catalog_seq
    status["caught_up"] = status["last_seq_number"] >= seq_number(catalog_seq)
    json.dump(status, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")
    return 0 if status["caught_up"] and not status["stuck"] else 1


def _octal(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal umask: {text!r}") from None
    if not 0 <= value <= 0o777:
        raise argparse.ArgumentTypeError(f"umask out of range: {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"want a positive number, got {text!r}")
    return value


def _parse_references(items: Sequence[str]) -> dict[str, str]:
    references = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"huimages: --reference wants key=value, got {item!r}")
        references[key] = value
    return references


def cmd_put(args: argparse.Namespace, config: Config) -> int:
    from ..node.parallel import put_step, run_jobs

    options = {"title": args.title or "", "references": _parse_references(args.reference),
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
    store = open_store(config)
    store.get_imagedoc(args.id)
    print(
        store.scaled_imageurl(args.id, args.size) if args.size != "o" else store.imageurl(args.id)
    )
    return 0


def cmd_delete(args: argparse.Namespace, config: Config) -> int:
    from ..node.follower import deletion_notice

    answer = open_store(config).delete_image(args.id)
    print(deletion_notice(args.id, answer, config))
    return 0


def cmd_purge(args: argparse.Namespace, config: Config) -> int:
    store = open_store(config)
    total = sum(store.purge(imageid) for imageid in args.ids)
    print(f"removed {total} cached file(s)")
    return 0


def cmd_migrate(args: argparse.Namespace, config: Config) -> int:
    from ..node.parallel import in_shard, migrate_step

    store = local_store(config, "migrate")
    if not store.has_legacy_attachments:
        raise SystemExit("huimages: migrate needs HUIMAGESCOUCHSERVER (the legacy attachments)")
    ids = in_shard(store.ids(), args.shard)
    progress = Progress(len(ids), "migrating", force=args.progress)
    summary: Counter[str] = Counter()
    interrupted = _bulk(config, migrate_step, ids, args.jobs, summary, progress)
    print(", ".join(f"{summary[key]} {key}" for key in ("moved", "already there", FAILED))
          + f" ({summary['nothing to move']} without any original)")
    return 130 if interrupted else 1 if summary[FAILED] else 0


def _bulk(config: Config, step: Any, ids: list[str], jobs: int, summary: Counter[str],
          progress: Progress) -> bool:
    """Tally ``step`` over ``ids`` in ``jobs`` processes; True when Ctrl-C stopped it."""
    from ..node.parallel import run_jobs

    try:
        for imageid, outcome in run_jobs(config, ImageStore, step, ids, jobs):
            summary[outcome] += 1
            progress.step(imageid)
    except KeyboardInterrupt:
        print(f"\nhuimages: interrupted after {progress.done} of {len(ids)};"
              " run it again to finish (done ones are skipped)", file=sys.stderr)
        return True
    return False


def cmd_previews(args: argparse.Namespace, config: Config) -> int:
    from ..node.parallel import in_shard, previews_step
    from ..store.backfill import PREVIEW_OUTCOMES

    if bool(args.all) == bool(args.ids):
        raise SystemExit("huimages: previews wants either --all or image IDs")
    if args.shard and not args.all:
        raise SystemExit("huimages: --shard splits --all between nodes")
    store = local_store(config, "previews")
    ids = in_shard(store.ids(), args.shard) if args.all else args.ids
    progress = Progress(len(ids), "previews", force=args.progress)
    summary: Counter[str] = Counter()
    interrupted = _bulk(config, previews_step, ids, args.jobs, summary, progress)
    print(", ".join(f"{summary[outcome]} {outcome}" for outcome in PREVIEW_OUTCOMES))
    return 130 if interrupted else 1 if summary[FAILED] else 0


def cmd_check(args: argparse.Namespace, config: Config) -> int:
    from ..store.broken import CHECK_OUTCOMES, PROBLEMS, check_images, marked_ids

    if bool(args.all) == bool(args.ids):
        raise SystemExit("huimages: check wants either --all or image IDs")
    store = local_store(config, "check")
    ids = list(marked_ids(store)) if args.all else args.ids
    summary = check_images(store, ids, lambda imageid, outcome: print(f"{imageid}: {outcome}"))
    print(", ".join(f"{summary[outcome]} {outcome}" for outcome in (*CHECK_OUTCOMES, FAILED)
                    if summary[outcome]) or "nothing marked broken")
    return 1 if summary[FAILED] or any(summary[outcome] for outcome in PROBLEMS) else 0


def cmd_prune_cache(args: argparse.Namespace, config: Config) -> int:
    from ..cache.directory import Cache
    from ..cache.prune import prune_cache

    if args.max_bytes is None and args.min_free is None:
        raise SystemExit("huimages: prune-cache needs --max-bytes and/or --min-free")
    report = prune_cache(
        Cache(config.cache_root),
        max_bytes=parse_bytes(args.max_bytes) if args.max_bytes else None,
        min_free=parse_bytes(args.min_free) if args.min_free else None,
        dry_run=args.dry_run,
        stale_after=args.stale_after,
    )
    if args.verbose_list:
        for path in report.deleted:
            print(path)
    print(report.summary())
    return 0


def _add_jobs(parser: argparse.ArgumentParser, shard: bool = False) -> None:
    parser.add_argument("--jobs", "-j", type=_positive, default=default_jobs(), metavar="N",
                        help="worker processes (default: the number of cores, here %(default)s)")
    if shard:
        parser.add_argument("--shard", type=parse_shard, metavar="K/N",
                            help="only the images of shard K of N (0 <= K < N): N nodes"
                            " split one run with no other coordination")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="huimages",
        description="Store JPEG originals and serve them at any size.",
        epilog="Configuration comes from the environment (HUIMAGES_DATA_DIR, IMAGESERVERURL, ...)"
        " and the options before the command.",
    )
    parser.add_argument("--data-dir", help="data directory (HUIMAGES_DATA_DIR)")
    parser.add_argument("--cache-dir", help="cache directory (HUIMAGES_CACHE_DIR)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the image server under gunicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=_positive, metavar="N",
                       help="worker processes (default: one per core, or WEB_CONCURRENCY)")
    serve.add_argument("--threads", type=_positive, metavar="N",
                       help="threads per worker, each serving one connection at a time"
                       " (default 64; renders are bounded by HUIMAGES_RENDER_SLOTS)")
    serve.add_argument("--timeout", type=_positive, default=60, metavar="SECONDS",
                       help="restart a worker whose event loop is silent this long")
    serve.add_argument("--access-log", action="store_true",
                       help="log every request to stderr (HUIMAGES_ACCESS_LOG)")
    serve.set_defaults(handler=cmd_serve)

    fcgi = commands.add_parser(
        "fcgi",
        help="run the image server as a FastCGI backend (flup) behind lighttpd or Apache",
        description="Serve the app over FastCGI until SIGTERM/SIGINT. The web server answers"
        " cache hits from the cache directory itself and forwards misses here; render its"
        " configuration with 'huimages config'.",
    )
    where = fcgi.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", metavar="PATH", help="listen on this unix socket")
    where.add_argument("--bind", metavar="HOST:PORT", help="listen on TCP (keep it on loopback)")
    fcgi.add_argument("--forking", action="store_true",
                      help="pre-forked worker processes instead of threads (no GIL contention)")
    fcgi.add_argument("--max-workers", type=_positive, metavar="N",
                      help="most threads (or processes with --forking) at once")
    fcgi.add_argument("--umask", type=_octal, metavar="OCTAL",
                      help="umask while creating the socket (default 111: srw-rw-rw-,"
                      " so a web server running as another user can connect)")
    fcgi.set_defaults(handler=cmd_fcgi)

    add_config_parser(commands)

    put = commands.add_parser("put", help="upload originals, print one ID per line")
    put.add_argument("files", nargs="+", metavar="FILE")
    put.add_argument("--title")
    put.add_argument("--reference", action="append", default=[], metavar="KEY=VALUE")
    put.add_argument("--type", help="image type, e.g. product_image")
    put.add_argument("--progress", action="store_true", help="show progress even if not a tty")
    _add_jobs(put)
    put.set_defaults(handler=cmd_put)

    info = commands.add_parser("info", help="print an image's metadata as JSON")
    info.add_argument("id")
    info.set_defaults(handler=cmd_info)

    url = commands.add_parser("url", help="print an image's URL")
    url.add_argument("id")
    url.add_argument("--size", default="o")
    url.set_defaults(handler=cmd_url)

    delete = commands.add_parser(
        "delete", help="delete an image: from the store and this node's cache at once,"
        " from other nodes' caches by their followers")
    delete.add_argument("id")
    delete.set_defaults(handler=cmd_delete)

    purge = commands.add_parser("purge", help="remove an image's cached variants on this node")
    purge.add_argument("ids", nargs="+", metavar="ID")
    purge.set_defaults(handler=cmd_purge)

    migrate = commands.add_parser(
        "migrate", help="copy attachment-only originals from CouchDB to the blob store"
    )
    migrate.add_argument("--progress", action="store_true", help="show progress even if not a tty")
    _add_jobs(migrate, shard=True)
    migrate.set_defaults(handler=cmd_migrate)

    previews = commands.add_parser(
        "previews",
        help="make the reduced previews that images uploaded before them lack",
        description="Uploads store reduced copies of each original (longest side 512 and 2048,"
        " when the original is more than 1.5 times that) that cold variants render from."
        " This makes them for older images; idempotent and safe to interrupt.",
    )
    previews.add_argument("ids", nargs="*", metavar="ID")
    previews.add_argument("--all", action="store_true", help="every image in the catalog")
    previews.add_argument("--progress", action="store_true",
                          help="show progress even if not a tty")
    _add_jobs(previews, shard=True)
    previews.set_defaults(handler=cmd_previews)

    check = commands.add_parser(
        "check",
        help="decode marked-broken originals again; clear the mark of those that decode",
        description="An original that failed to decode is marked 'broken' (never deleted)."
        " This decodes it again and removes the mark when it works; images that older"
        " versions marked broken *and deleted* are un-deleted when their original is still"
        " there and decodes. --all takes every marked image; IDs given are checked (and"
        " marked if they do not decode) whether marked or not.",
    )
    check.add_argument("ids", nargs="*", metavar="ID")
    check.add_argument("--all", action="store_true", help="every image marked broken")
    check.set_defaults(handler=cmd_check)
    follow = commands.add_parser(
        "follow",
        help="purge this node's cache of images deleted anywhere (the catalog's change feed)",
        description="Follow the catalog's changes and purge this node's cached variants of"
        " images deleted or changed through any node. 'huimages serve' and 'huimages fcgi'"
        " run one already; run this alone where only a webserver serves the cache."
        " See docs/cluster.md.",
    )
    follow.add_argument("--status", action="store_true",
                        help="print this node's follower state against the catalog; exit 0"
                        " when caught up and not stuck")
    follow.add_argument("--parent", type=int, help=argparse.SUPPRESS)  # leave with this pid
    follow.set_defaults(handler=cmd_follow)

    prune = commands.add_parser(
        "prune-cache",
        help="delete least recently used cached variants until a target is met",
        description="Deletes the least recently used files (by max(atime, mtime)) until the"
        " cache holds at most --max-bytes and/or the filesystem has --min-free available."
        " Safe while the server runs. Sizes accept K, M, G, T suffixes.",
    )
    prune.add_argument("--max-bytes", metavar="SIZE", help="keep the cache at most this big")
    prune.add_argument("--min-free", metavar="SIZE", help="keep this much free on the filesystem")
    prune.add_argument("--dry-run", action="store_true", help="only report what would go")
    prune.add_argument("--stale-after", type=float, default=3600.0, metavar="SECONDS",
                       help="remove temporary files older than this (crash leftovers)")
    prune.add_argument("--list", dest="verbose_list", action="store_true",
                       help="print each deleted file")
    prune.set_defaults(handler=cmd_prune_cache)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(verbose=args.verbose)
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

