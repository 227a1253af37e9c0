"""How big a node runs: worker processes, threads, and decodes of whole originals.

Shared by ``huimages serve`` (granian) and ``gunicorn -c
python:huimages_wsgi.deploy.gunicorn_conf``, so both run a node alike.
"""

from __future__ import annotations

import os

from ..cache.admission import HIT_THREADS, cpu_count

#: Threads per worker process: every miss waiting for a render slot holds one (at
#: most HUIMAGES_RENDER_QUEUE, the threads minus ``HIT_THREADS`` by default), and the
#: rest answer hits. Waiting threads cost no CPU; renders are bounded by the slots.
DEFAULT_THREADS = 256


def default_workers() -> int:
    """One process per core (renders are CPU-bound and hold the GIL in parts);
    ``WEB_CONCURRENCY`` overrides it, as gunicorn's and granian's users expect."""
    try:
        return max(1, int(os.environ.get("WEB_CONCURRENCY", "")))
    except ValueError:
        return cpu_count()


def render_queue(threads: int) -> int:
    """Misses one worker lets wait: its threads, less those kept for hits."""
    return max(1, threads - HIT_THREADS)


def decode_share(workers: int) -> int:
    """How many whole-original decodes one worker may run at once: the node's cores
    divided among the workers, rounded up (each decode holds a decoded photo)."""
    return max(1, -(-cpu_count() // workers))
