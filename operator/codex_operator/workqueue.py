"""Level-triggered reconciling: watch events queue keys, a few workers reconcile them.

This is client-go's workqueue, in asyncio. kopf's watch handlers only :meth:`WorkQueue.add`
an object's key; a worker later reconciles the key against the newest object in kopf's
indexes. A key waits in the queue at most once however many events arrive for it, and is
never reconciled twice at once: an event that arrives meanwhile queues it again for after.
So a burst (a thousand new runs, or the listing after a restart) costs a thousand small keys
in a queue, not a thousand handlers in flight holding their watch events, and the memory and
the API concurrency follow the worker count rather than the size of the burst.

A reconcile that raises is retried with exponential backoff (``base_delay`` doubling up to
``max_delay``); one that raises :class:`Requeue` is retried after the delay it names, without
counting as a failure. A later event for the key reconciles it at once in either case.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Hashable, Optional

logger = logging.getLogger(__name__)


class Requeue(Exception):
    """Reconcile the key again after ``delay`` seconds: waiting on something, not a failure."""

    def __init__(self, message: str, delay: float):
        super().__init__(message)
        self.delay = delay


class WorkQueue:
    def __init__(self, name: str, reconcile: Callable[[Hashable], Awaitable[None]], workers: int,
                 base_delay: float = 1.0, max_delay: float = 300.0):
        self.name = name
        self.reconcile = reconcile
        self.workers = workers
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.pending: asyncio.Queue[Hashable] = asyncio.Queue()
        self.queued: set[Hashable] = set()
        self.active: set[Hashable] = set()
        self.dirty: set[Hashable] = set()  # added while being reconciled: queued again after
        self.failures: dict[Hashable, int] = {}
        self.timers: dict[Hashable, asyncio.TimerHandle] = {}
        self.tasks: list[asyncio.Task] = []

    def __len__(self) -> int:
        return len(self.queued) + len(self.active)

    def add(self, key: Hashable) -> None:
        """Reconcile ``key`` soon (once, however often it is added before a worker takes it)."""
        if key in self.active:
            self.dirty.add(key)
        elif key not in self.queued:
            self.queued.add(key)
            self.pending.put_nowait(key)

    def add_after(self, key: Hashable, delay: float) -> None:
        """Reconcile ``key`` in ``delay`` seconds (an earlier retry already planned wins)."""
        loop = asyncio.get_running_loop()
        planned = self.timers.get(key)
        if planned is not None and planned.when() <= loop.time() + delay:
            return
        if planned is not None:
            planned.cancel()
        self.timers[key] = loop.call_later(delay, self._due, key)

    def forget(self, key: Hashable) -> None:
        """Drop the retry state of a deleted object (a queued key still runs and finds nothing)."""
        self.failures.pop(key, None)
        timer = self.timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def _due(self, key: Hashable) -> None:
        self.timers.pop(key, None)
        self.add(key)

    def start(self) -> None:
        self.tasks = [asyncio.get_running_loop().create_task(self._work(), name=f"{self.name}-{i}")
                      for i in range(self.workers)]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for timer in self.timers.values():
            timer.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []

    async def _work(self) -> None:
        while True:
            key = await self.pending.get()
            self.queued.discard(key)
            self.active.add(key)
            try:
                delay = await self._reconcile(key)
            finally:
                self.active.discard(key)
            if key in self.dirty:
                self.dirty.discard(key)
                self.add(key)
            elif delay is not None:
                self.add_after(key, delay)

    async def _reconcile(self, key: Hashable) -> Optional[float]:
        """The delay before the key's retry, or None when it reconciled."""
        try:
            await self.reconcile(key)
        except Requeue as wait:
            logger.info("%s %s: %s; again in %.0f s", self.name, _show(key), wait, wait.delay)
            return wait.delay
        except Exception as error:  # noqa: BLE001 - any failure is retried, never fatal to the worker
            failures = self.failures[key] = self.failures.get(key, 0) + 1
            delay = min(self.base_delay * 2 ** (failures - 1), self.max_delay)
            logger.warning("%s %s failed (%s: %s); retry %d in %.0f s", self.name, _show(key), type(error).__name__,
                           error, failures, delay, exc_info=failures == 1)
            return delay
        self.failures.pop(key, None)
        timer = self.timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        return None


def _show(key: Hashable) -> str:
    """("run", "ns", "name") -> "ns/name"."""
    return "/".join(map(str, key[1:])) if isinstance(key, tuple) else str(key)
