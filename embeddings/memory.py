"""Freed memory goes back to the system between steps, so a large run's peak is what it holds at once.

Polars allocates with jemalloc, which by default keeps freed pages for about ten seconds; numpy and
torch allocate with glibc's malloc, which keeps freed heap until it is trimmed. Neither can reuse what
the other holds, so without this a run's peak RSS grew with everything its earlier steps had freed
(docs/decisions.md#freed-memory-returned-between-steps).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
from functools import cache

JEMALLOC_CONF = "dirty_decay_ms:0,muzzy_decay_ms:0"  # return freed pages at once


def configure_allocators() -> None:
    """Ask Polars' jemalloc to return freed pages at once. It reads the setting when Polars loads, so
    this runs when `embeddings` is imported; a `_RJEM_MALLOC_CONF` already in the environment wins."""
    os.environ.setdefault("_RJEM_MALLOC_CONF", JEMALLOC_CONF)


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
