"""``huimages migrate``, ``previews``, ``check`` and ``prune-cache``: work over many images."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any

from ..core.config import Config
from ..core.settings import parse_bytes
from ..node.parallel import FAILED
from ..store.imagestore import ImageStore
from .options import Progress, add_jobs, local_store


def cmd_migrate(args: argparse.Namespace, config: Config) -> int:
    from ..node.parallel import in_shard, migrate_step

    store = local_store(config, "migrate")
    if not store.has_legacy_attachments:
        raise SystemExit("huimages: migrate needs HUIMAGESCOUCHSERVER (the legacy attachments)")
    ids = in_shard(store.ids(), args.shard)
    progress = Progress(len(ids), "migrating", force=args.progress)
    summary: Counter[str] = Counter()
    interrupted = run_bulk(config, migrate_step, ids, args.jobs, summary, progress)
    print(", ".join(f"{summary[key]} {key}" for key in ("moved", "already there", FAILED))
          + f" ({summary['nothing to move']} without any original)")
    return 130 if interrupted else 1 if summary[FAILED] else 0


def run_bulk(config: Config, step: Any, ids: list[str], jobs: int, summary: Counter[str],
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
    interrupted = run_bulk(config, previews_step, ids, args.jobs, summary, progress)
    print(", ".join(f"{summary[outcome]} {outcome}" for outcome in (*PREVIEW_OUTCOMES, FAILED)))
    return 130 if interrupted else 1 if summary[FAILED] else 0


def cmd_check(args: argparse.Namespace, config: Config) -> int:
    from ..node.parallel import check_step, run_jobs
    from ..store.broken import CHECK_OUTCOMES, PROBLEMS, marked_ids

    if bool(args.all) == bool(args.ids):
        raise SystemExit("huimages: check wants either --all or image IDs")
    store = local_store(config, "check")
    ids = list(marked_ids(store)) if args.all else args.ids
    summary: Counter[str] = Counter()
    for imageid, outcome in run_jobs(config, lambda _: store, check_step, ids, 1):
        summary[outcome] += 1
        print(f"{imageid}: {outcome}")
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
    if config.metrics and not args.dry_run:  # the cache's size and evictions on /_metrics
        from ..web.metrics import record_prune

        try:
            record_prune(config, report.scanned_bytes - report.deleted_bytes,
                         report.scanned_files - report.deleted_files,
                         report.deleted_files, report.deleted_bytes)
        except OSError as exc:  # the prune is done; only its figures are lost
            print(f"huimages: cannot record the prune for /_metrics: {exc}", file=sys.stderr)
    return 0


def add_parsers(commands: Any) -> None:
    """The bulk commands."""
    migrate = commands.add_parser(
        "migrate", help="copy attachment-only originals from CouchDB to the blob store"
    )
    migrate.add_argument("--progress", action="store_true", help="show progress even if not a tty")
    add_jobs(migrate, shard=True)
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
    add_jobs(previews, shard=True)
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
