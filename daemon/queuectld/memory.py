"""Giving freed heap back to the system after a large request.

A batch chunk of 10,000 jobs is some megabytes of parsed requests and rows, freed when it is
stored; glibc keeps such memory in its arenas for reuse, so a daemon that once took a large batch
would keep its peak size for its whole life. `malloc_trim(0)` returns the free pages of every
arena. Elsewhere than glibc this does nothing."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


def release_freed_memory() -> bool:
    """Return free heap pages to the system; whether this platform could (glibc's malloc_trim)."""
    trim = _trim()
    if trim is None:
        return False
    trim(0)
    return True
