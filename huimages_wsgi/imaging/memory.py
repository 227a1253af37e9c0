"""Giving a decoded photo's memory back to the system when a render ends.

A render holds a decoded original (37 MB for a 12 MP photo) and its resized
copies in a few large buffers. glibc raises its mmap threshold each time it
frees such a buffer, so later ones come from the heap arena of the thread
that asked, and freed memory stays with the process. A threaded worker that
renders on one thread after another then keeps about a photo's worth per
arena: measured here, 143 MB still resident after 8 renders of a 12 MP photo
on 8 threads in turn, 40 MB with the threshold fixed, and a peak of 209 MB
against 169 MB (the peak of one render). With four threads that stay alive,
as a worker's do, 289 MB against 37 MB (tests/unit/test_memory.py).

``return_large_buffers`` fixes the threshold at 1 MiB (``mallopt``), so every
large buffer is its own mapping and goes back to the system when freed.
``make_app`` calls it: the standalone server owns its process. A host
application that mounts ``ImageMiddleware`` decides for itself. ``huimages serve``
and ``huimages fcgi`` also keep up to 32 MB of Pillow's own image blocks for the next
render (deploy/pillowblocks.py): a bounded amount, where the arenas kept a photo each.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
THRESHOLD = 1 << 20


def return_large_buffers(threshold: int = THRESHOLD) -> bool:
    """Fix glibc's mmap threshold for this process; False where there is no glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))
