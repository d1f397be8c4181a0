"""The work queue's promises: one queued copy of a key, never two reconciles of it at once,
backoff on failure, a Requeue's own delay, and concurrency bounded by the workers."""

from __future__ import annotations

import asyncio

from codex_operator.workqueue import Requeue, WorkQueue


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


class Recorder:
    def __init__(self, fail: int = 0, requeue: float | None = None, hold: float = 0.0):
        self.calls: list = []
        self.fail = fail
        self.requeue = requeue
        self.hold = hold
        self.running = 0
        self.most = 0

    async def __call__(self, key):
        self.calls.append((key, asyncio.get_running_loop().time()))
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(self.hold)
            if self.fail:
                self.fail -= 1
                raise RuntimeError("the API said no")
            if self.requeue is not None:
                delay, self.requeue = self.requeue, None
                raise Requeue("waiting for a name to be freed", delay)
        finally:
            self.running -= 1


async def drain(queue: WorkQueue, settle: float = 0.05) -> None:
    """Until nothing is queued or being reconciled (a planned retry may still be due later)."""
    await asyncio.sleep(settle)
    while len(queue):
        await asyncio.sleep(0.01)


def retries_of(seen: Recorder, seconds: float, **options) -> tuple[list[float], WorkQueue]:
    """Add one key, let the queue run for ``seconds``; the reconcile times and the queue."""
    async def scenario():
        queue = WorkQueue("run", seen, workers=1, **options)
        queue.start()
        queue.add("k")
        await asyncio.sleep(seconds)
        await queue.stop()
        return queue
    queue = run(scenario())
    return [t for _, t in seen.calls], queue


def test_a_burst_of_events_for_one_key_reconciles_it_once():
    async def scenario():
        seen = Recorder()
        queue = WorkQueue("run", seen, workers=4)
        for _ in range(100):
            queue.add(("run", "ns", "a"))
        queue.add(("run", "ns", "b"))
        queue.start()
        await drain(queue)
        await queue.stop()
        return [key for key, _ in seen.calls]
    assert sorted(run(scenario())) == [("run", "ns", "a"), ("run", "ns", "b")]


def test_a_key_added_while_reconciling_runs_again_after_never_alongside():
    async def scenario():
        seen = Recorder(hold=0.05)
        queue = WorkQueue("run", seen, workers=4)
        queue.start()
        queue.add("k")
        await asyncio.sleep(0.01)
        queue.add("k")  # an event while the first reconcile is in flight
        queue.add("k")
        await drain(queue, 0.2)
        await queue.stop()
        return seen
    seen = run(scenario())
    assert len(seen.calls) == 2 and seen.most == 1


def test_failures_retry_with_doubling_backoff_and_success_resets_it():
    times, queue = retries_of(Recorder(fail=2), 0.4, base_delay=0.05, max_delay=1.0)
    assert len(times) == 3
    assert 0.04 <= times[1] - times[0] < 0.1 and 0.09 <= times[2] - times[1] < 0.2
    assert queue.failures == {}


def test_a_requeue_waits_its_own_delay_and_is_not_a_failure():
    times, queue = retries_of(Recorder(requeue=0.1), 0.3, base_delay=5.0)
    assert len(times) == 2 and 0.09 <= times[1] - times[0] < 0.2
    assert queue.failures == {}


def test_an_event_does_not_wait_for_a_planned_retry_and_forget_cancels_it():
    async def scenario():
        seen = Recorder(fail=1)
        queue = WorkQueue("run", seen, workers=1, base_delay=60.0)
        queue.start()
        queue.add("k")
        await asyncio.sleep(0.05)
        assert "k" in queue.timers and queue.failures == {"k": 1}
        queue.add("k")  # a new event: reconciled at once, and it succeeds
        await drain(queue)
        assert queue.timers == {} and queue.failures == {}
        seen.fail = 1
        queue.add("k")
        await drain(queue)
        queue.forget("k")  # the object was deleted
        assert queue.timers == {} and queue.failures == {}
        await queue.stop()
        return seen
    assert len(run(scenario()).calls) == 3


def test_concurrency_is_bounded_by_the_workers():
    async def scenario():
        seen = Recorder(hold=0.02)
        queue = WorkQueue("run", seen, workers=3)
        queue.start()
        for i in range(30):
            queue.add(("run", "ns", f"r{i}"))
        assert len(queue) == 30
        await drain(queue)
        await queue.stop()
        return seen
    seen = run(scenario())
    assert len(seen.calls) == 30 and seen.most == 3
