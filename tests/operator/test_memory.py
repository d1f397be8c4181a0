"""memory.collect_and_freeze: cycles still go, survivors are frozen out of the automatic collector."""

from __future__ import annotations

import gc
import weakref

from codex_operator.memory import collect_and_freeze


def test_the_periodic_collection_frees_cycles_and_freezes_the_survivors():
    class Node:
        pass

    kept, cycle = Node(), Node()
    cycle.self = cycle
    gone = weakref.ref(cycle)
    del cycle
    try:
        collect_and_freeze()
        assert gone() is None  # the cycle was collected
        assert gc.get_freeze_count() > 0 and gc.is_tracked(kept)  # the survivors are frozen
    finally:
        gc.unfreeze()
