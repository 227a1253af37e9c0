"""What this node's follower did, as its state file tells: for ``/_health``, ``/_metrics``
and ``huimages follow --status``.

The follower writes ``<cache_dir>/.follower/state.json`` (follower.py); any
process of the node reads it here, so the web workers need no link to the
follower process.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..core.config import Config
from ..storage.base import seq_number

FOLLOWER_DIR = ".follower"
#: A follower silent for this many heartbeats (no change, no heartbeat) is stuck.
STUCK_BEATS = 3


def follower_dir(config: Config) -> Path:
    return config.cache_root / FOLLOWER_DIR


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def follower_status(config: Config, now: float | None = None) -> dict[str, Any] | None:
    """This node's follower as its state file tells it; None when none ever ran here."""
    state = read_json(follower_dir(config) / "state.json")
    if state is None:
        return None
    now = time.time() if now is None else now
    heartbeat = float(state.get("heartbeat") or config.follow_heartbeat)
    last_ok = state.get("last_ok")
    caught_up = state.get("caught_up_at")
    silent = now - float(last_ok) if last_ok else None
    stuck_after = STUCK_BEATS * heartbeat + 5
    return {
        "last_seq": state.get("last_seq"),
        "last_seq_number": seq_number(state.get("last_seq")),
        "seconds_since_feed": round(silent, 3) if silent is not None else None,
        "lag_seconds": round(now - float(caught_up), 3) if caught_up else None,
        "stuck": silent is None or silent > stuck_after,
        "stuck_after_seconds": stuck_after,
        "error": state.get("error"),
        "purged_total": state.get("purged_total", 0),
        "changes_total": state.get("changes_total", 0),
        "reconciles_total": state.get("reconciles_total", 0),
        "errors_total": state.get("errors_total", 0),
        "restarts_total": state.get("restarts_total", 0),
        "shared_purges_total": state.get("shared_purges_total", 0),
        "shared_purge_failures_total": state.get("shared_purge_failures_total", 0),
        "shared_purges_pending": state.get("shared_purges_pending", 0),
        "pid": state.get("pid"),
    }


def follower_check(config: Config) -> dict[str, Any]:
    """The ``follower`` entry of ``/_health``: not ok when stuck (or never ran here)."""
    status = follower_status(config)
    where = str(follower_dir(config))
    if status is None:
        return {"backend": where, "ok": False,
                "error": "no follower has run for this cache (huimages follow)"}
    result: dict[str, Any] = {
        "backend": where,
        "ok": not status["stuck"],
        "last_seq": status["last_seq"],
        "lag_seconds": status["lag_seconds"],
        "seconds_since_feed": status["seconds_since_feed"],
        "errors_total": status["errors_total"],
        "restarts_total": status["restarts_total"],
    }
    if status["stuck"]:
        result["error"] = (
            f"stuck: no word from the change feed for more than {status['stuck_after_seconds']:g}"
            f" s ({status['error'] or 'no error recorded'}); cached copies of images deleted"
            " elsewhere may still be served here"
        )
    return result


def purge_bound(config: Config) -> float:
    """Seconds within which every healthy node's follower has purged a deletion.

    Changes stream to followers as they happen (well under a second); a
    follower that has not heard from the feed for this long reports itself
    stuck on ``/_health``.
    """
    return STUCK_BEATS * config.follow_heartbeat + 5
