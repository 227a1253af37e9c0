"""What the ``huimages`` commands share: argument types, a progress bar, the local store."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from ..core.config import Config
from ..node.parallel import default_jobs, parse_shard
from ..store.imagestore import ImageStore


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


def octal(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal umask: {text!r}") from None
    if not 0 <= value <= 0o777:
        raise argparse.ArgumentTypeError(f"umask out of range: {text!r}")
    return value


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"want a positive number, got {text!r}")
    return value


def parse_references(items: Sequence[str]) -> dict[str, str]:
    references = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"huimages: --reference wants key=value, got {item!r}")
        references[key] = value
    return references


def add_jobs(parser: argparse.ArgumentParser, shard: bool = False) -> None:
    parser.add_argument("--jobs", "-j", type=positive, default=default_jobs(), metavar="N",
                        help="worker processes (default: the number of cores, here %(default)s)")
    if shard:
        parser.add_argument("--shard", type=parse_shard, metavar="K/N",
                            help="only the images of shard K of N (0 <= K < N): N nodes"
                            " split one run with no other coordination")
