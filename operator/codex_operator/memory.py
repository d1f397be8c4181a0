"""Give memory back to the OS after bursts.

At 1000 runs the operator's live data is ~40 MB, but a burst (a thousand new runs, or the
initial listing after a restart) parses thousands of full objects at once. Much of what is left
is cyclic garbage (asyncio tasks, frames) that the generational collector reaches only rarely,
and glibc keeps freed heap. So the operator pod runs with ``PYTHONMALLOC=malloc`` and
``MALLOC_ARENA_MAX=2`` (builders/operator_install.py), and this task runs a full collection and
``malloc_trim(0)`` every 30 seconds (tens of milliseconds): RSS follows the live data again.
Between those collections, what survived them is frozen, out of the automatic collector's way.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
from typing import Callable, Optional

logger = logging.getLogger(__name__)
TRIM_INTERVAL = 30.0


def malloc_trim() -> Optional[Callable[[], int]]:
    """glibc's malloc_trim(0), or None on a libc without it (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return lambda: trim(0)


def collect_and_freeze() -> None:
    """A full collection, after which what survived is frozen (``gc.freeze``).

    The indexes hold hundreds of thousands of small dicts at 10,000 runs, all long-lived and
    acyclic. Left in the collector's oldest generation, every automatic full collection would
    traverse them all again, so its cost grows with the number of runs. Frozen, automatic
    collections see only what is new; reference counting still frees a frozen object the moment
    it is dropped, and this periodic collection unfreezes everything first, so cyclic garbage
    still goes within one interval.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


async def trim_periodically(interval: float = TRIM_INTERVAL) -> None:
    trim = malloc_trim()
    if trim is None:
        logger.info("malloc_trim is not available: memory is not handed back after bursts")
    while True:
        await asyncio.sleep(interval)
        collect_and_freeze()
        if trim is not None:
            trim()
