"""What a rendered webserver configuration needs on disk: its run directory, the cache
directory, and lighttpd's answer while the app is unreachable.

Usage (``huimages config`` does this after rendering)::

    ensure_cache_dir(cache_dir)
    ensure_run_dir(run_dir, user, group)
    ensure_unavailable_page(run_dir)   # lighttpd only

Each returns a one-line note for the operator, or "" when there was nothing
to do, and raises ``OSError`` when it cannot be done.
"""

from __future__ import annotations

import os

from .webconfig import default_user_group


def ensure_run_dir(run_dir: str, user: str | None = None, group: str | None = None) -> str:
    """Create ``run_dir`` (mode 0755) if missing; owned by ``user``:``group`` when root.

    Started as root, lighttpd writes its logs after switching to the
    configured user, so the directory is made that user's; the other servers
    write there as root and do not mind.  An existing directory is left as
    it is.  Returns a one-line note for the operator, or "" when there was
    nothing to do; raises ``OSError`` (or ``KeyError`` for an unknown user)
    when it cannot be done.
    """
    if os.path.isdir(run_dir):
        return ""
    _make_dir(run_dir)
    if os.geteuid() != 0:
        return f"created the run directory {run_dir}"
    import grp
    import pwd

    default_user, default_group = default_user_group()
    user, group = user or default_user, group or default_group
    uid = pwd.getpwnam(user).pw_uid
    gid = grp.getgrnam(group).gr_gid
    os.chown(run_dir, uid, gid)
    return f"created the run directory {run_dir} (owner {user}:{group})"


def ensure_cache_dir(cache_dir: str) -> str:
    """Create the (empty) cache directory if missing, mode 0755, owned by the caller.

    Apache refuses to start on a ``DocumentRoot`` that does not exist, and a
    fresh install has no cache yet.  The app (run by the same account as
    ``huimages config``, usually) writes into it; the web server only reads.
    Returns a note, or "" when it already existed; raises ``OSError``.
    """
    if os.path.isdir(cache_dir):
        return ""
    _make_dir(cache_dir)
    return f"created the cache directory {cache_dir}"


def _make_dir(path: str) -> None:
    os.makedirs(path, mode=0o755)
    # the server user must traverse it, whatever the umask
    os.chmod(path, 0o755)  # noqa: S103


# ----------------------------------------------------------------- helpers


#: What lighttpd's error handler sends when it cannot reach the app (a 503).
UNAVAILABLE_TEXT = "the image application is not reachable; retry shortly\n"


def ensure_unavailable_page(run_dir: str) -> str:
    """Write ``unavailable.txt`` into ``run_dir`` (mode 0644) for lighttpd's error
    handler, when it is missing or says something else; a note, or ""."""
    path = os.path.join(run_dir, "unavailable.txt")
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read() == UNAVAILABLE_TEXT:
                return ""
    except OSError:
        pass
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(UNAVAILABLE_TEXT)
    os.chmod(path, 0o644)
    return f"wrote {path} (lighttpd's answer while the app is unreachable)"
