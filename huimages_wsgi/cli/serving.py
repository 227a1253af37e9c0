"""``huimages serve``, ``fcgi`` and ``follow``: running a node."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..core.config import Config
from .options import local_store, octal, positive


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from ..deploy.pillowblocks import restart_with_pillow_blocks
    from ..deploy.server import run_server

    if config.browse is None:  # HUIMAGES_BROWSE unset: on for the embedded default only
        config = config.with_changes(browse=not (config.s3_bucket or config.couch_server))
    if args.access_log:
        config = config.with_changes(access_log=True)
    if config.follow is None:  # HUIMAGES_FOLLOW unset: the node's follower runs beside
        config = config.with_changes(follow=True)
    if (args.certfile is None) != (args.keyfile is None):
        raise SystemExit("huimages: --certfile and --keyfile go together")
    if args.own_process:
        restart_with_pillow_blocks()
    run_server(
        config,
        host=args.host,
        port=args.port,
        workers=args.workers,
        threads=args.threads,
        certfile=args.certfile,
        keyfile=args.keyfile,
    )
    return 0


def cmd_fcgi(args: argparse.Namespace, config: Config) -> int:
    from ..deploy.fcgi import serve_fcgi
    from ..deploy.multiprocess import prepare
    from ..deploy.pillowblocks import restart_with_pillow_blocks
    from ..deploy.webconfig import parse_hostport
    from ..web.app import make_app

    bind = parse_hostport(args.bind) if args.bind else None
    if config.follow is None:  # HUIMAGES_FOLLOW unset: the node's follower runs beside
        config = config.with_changes(follow=True)
    options: dict[str, Any] = {}
    if args.umask is not None:
        options["umask"] = args.umask
    processes = 1
    if args.forking:
        from ..cache.admission import cpu_count
        from ..deploy.sizing import decode_share

        processes = args.max_workers or cpu_count()
        if config.render_slots_per_process is None:  # the node's decodes shared out
            config = config.with_changes(render_slots_per_process=decode_share(processes))
    elif args.max_workers is not None:
        options["maxThreads"] = args.max_workers
    if args.own_process:
        restart_with_pillow_blocks()
    prepare(config)  # the processes' metrics directory, before prometheus_client loads
    app = make_app(config)  # a bad configuration fails here, before listening
    where = args.socket or args.bind
    mode = f"{processes} processes" if args.forking else "threaded"
    print(f"huimages fcgi: serving {config.cache_root} on {where} ({mode})", file=sys.stderr)
    from ..node.process import start_follower_process, stop_follower_process

    follower = start_follower_process(config)  # one per node, beside flup's threads or forks
    try:
        serve_fcgi(app, socket_path=args.socket, bind=bind, processes=processes, **options)
    finally:
        stop_follower_process(follower)
    return 0


def cmd_follow(args: argparse.Namespace, config: Config) -> int:
    from ..node.process import run_follower
    from ..node.status import follower_status

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


def add_parsers(commands: Any) -> None:
    """The commands that run a node."""
    serve = commands.add_parser("serve", help="run the image server (granian, with TLS if asked)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=positive, metavar="N",
                       help="worker processes (default: one per core, or WEB_CONCURRENCY)")
    serve.add_argument("--threads", type=positive, metavar="N",
                       help="threads per worker that run the app, each one request at a"
                       " time (default 64); slow clients hold none")
    serve.add_argument("--certfile", type=Path, metavar="PEM",
                       help="serve HTTPS with this certificate (chain)")
    serve.add_argument("--keyfile", type=Path, metavar="PEM",
                       help="its private key, PKCS#8 (BEGIN PRIVATE KEY)")
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
                      help="worker processes (one per core, or --max-workers), each with its own"
                      " threads: no GIL contention between renders")
    fcgi.add_argument("--max-workers", type=positive, metavar="N",
                      help="most threads at once (with --forking: the processes)")
    fcgi.add_argument("--umask", type=octal, metavar="OCTAL",
                      help="umask while creating the socket (default 111: srw-rw-rw-,"
                      " so a web server running as another user can connect)")
    fcgi.set_defaults(handler=cmd_fcgi)

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
