"""Give freed memory back to the operating system.

glibc's allocator keeps the memory that large uploads and their arrays were in, once freed, for
reuse: after 40 clients sent 32 photos each, the server's resident memory stayed at 4.35 GB, and
`malloc_trim(0)` brought it to 1.39 GB (measured by the hardening probe). The store's watcher calls
`trim_heap` on every tick, so memory returns to its level after a burst.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():  # noqa: ANN202 - a ctypes function, or None away from glibc
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


def trim_heap() -> bool:
    """Release the allocator's free memory to the OS; False where there is no `malloc_trim`."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
