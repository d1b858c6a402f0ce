"""Freed memory goes back to the system between steps, so a large run's peak is what it holds at once.

numpy and torch allocate with glibc's malloc, which keeps freed heap until it is trimmed, where
Polars' own allocator (jemalloc) cannot reuse it; without a trim a run's peak RSS grew with what
its earlier steps had freed (docs/decisions.md#freed-memory-returned-between-steps).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import cache


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None  # glibc only


def release_memory() -> None:
    """Collect garbage and hand glibc's freed heap back to the system (between steps and chunks)."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
