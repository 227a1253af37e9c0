"""Taking an exclusive ``flock`` without waiting: the one way every layer tries a lock.

    if not try_lock(fd):
        ...  # another process (or descriptor) holds it

The lock belongs to the open file description, so it is released when the
descriptor (and every copy a fork made) is closed, or when the process dies.
"""

from __future__ import annotations

import errno
import fcntl


def try_lock(fd: int) -> bool:
    """Lock ``fd`` exclusively if it is free now; False when another holds it (any other
    failure, such as a filesystem without locks, raises)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        return False
    return True
