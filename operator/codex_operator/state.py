"""What the operator keeps in memory between handler calls (kopf's memo carries one instance)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from codex_api import GROUP_VERSION

from . import metrics
from .config import OperatorConfig
from .k8s import Kube
from .metrics import PhaseBook
from .status import status_patch

# Enough runs in flight to keep the API client's 16 workers busy, few enough to bound memory.
RUN_SLOTS = 32
# ("run" | "model", namespace, name)
Key = tuple[str, str, str]


def resource_version(obj: Optional[dict[str, Any]]) -> int:
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


@dataclass
class Written:
    """The status the operator last wrote, until the watch delivers an object at least as new."""

    resource_version: int
    status: dict[str, Any]


@dataclass
class OperatorState:
    cfg: OperatorConfig
    kube: Kube
    phases: PhaseBook = field(default_factory=PhaseBook)
    locks: defaultdict[Key, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    written: dict[Key, Written] = field(default_factory=dict)
    active_jobs: set[Key] = field(default_factory=set)
    # uid -> (generation, spec facts) of a run (see sync_runs.facts_for).
    spec_facts: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    # Runs building and creating their Job's path at once (see sync_runs.ensure_run_children).
    run_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(RUN_SLOTS))

    def stored_status(self, key: Key, obj: dict[str, Any]) -> dict[str, Any]:
        """The freshest status known for ``obj``: the watched one, or what was just written if newer."""
        written = self.written.get(key)
        if written is not None and written.resource_version > resource_version(obj):
            return {**(obj.get("status") or {}), **written.status}
        if written is not None:
            del self.written[key]
        return dict(obj.get("status") or {})

    def remember(self, key: Key, patched: Optional[dict[str, Any]], owned: dict[str, Any]) -> None:
        if patched is not None:
            self.written[key] = Written(resource_version(patched), owned)

    def forget(self, key: Key, uid: Optional[str] = None) -> None:
        if uid is not None:
            self.spec_facts.pop(uid, None)
        self.written.pop(key, None)
        self.locks.pop(key, None)
        self.active_jobs.discard(key)
        self.phases.set(key, None)

    async def write_status(self, key: Key, kind: str, meta: dict[str, Any], stored: dict[str, Any],
                           computed: dict[str, Any], owned: Sequence[str]) -> bool:
        """Patch the operator-owned status fields that changed, if any (zero writes when stable);
        True when it wrote. What was written is remembered until the watch catches up."""
        changes = status_patch(stored, computed, owned)
        if not changes:
            return False
        patched = await self.kube.patch(GROUP_VERSION, kind, meta["namespace"], meta["name"], {"status": changes},
                                        subresource="status")
        metrics.STATUS_WRITES.labels(kind).inc()
        self.remember(key, patched, {k: computed.get(k) for k in owned})
        return True
