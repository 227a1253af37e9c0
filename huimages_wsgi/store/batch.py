"""Bulk commands over many images: one failure is counted, never the end of the run.

``huimages migrate`` and ``huimages previews`` walk the whole catalog; an
image that fails is logged and tallied so the run finishes and can simply be
started again (each step is idempotent).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable

from ..core.errors import HuImagesError

log = logging.getLogger("huimages_wsgi")

FAILED = "failed"


def tally(
    imageids: Iterable[str],
    step: Callable[[str], str],
    on_step: Callable[[str, str], None] = lambda imageid, outcome: None,
    what: str = "processing",
) -> Counter[str]:
    """Run ``step`` on each ID and count its outcomes (``FAILED`` for our errors)."""
    summary: Counter[str] = Counter()
    for imageid in imageids:
        try:
            outcome = step(imageid)
        except HuImagesError as exc:
            log.warning("%s %s failed: %s", what, imageid, exc)
            outcome = FAILED
        summary[outcome] += 1
        on_step(imageid, outcome)
    return summary
