"""What the operator keeps in memory between handler calls (kopf's memo carries one instance)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional, Sequence

from codex_api import GROUP_VERSION

from . import metrics
from .builders.event import build_event
from .config import OperatorConfig
from .k8s import Kube
from .metrics import PhaseBook
from .status import status_patch
from .views import Views
from .workqueue import WorkQueue

logger = logging.getLogger(__name__)

# Enough runs creating their Job's path at once to keep the API client's 16 workers busy.
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
    """One per operator process. Only the work queues' workers reconcile, one key at a time, so
    nothing here needs a lock."""

    cfg: OperatorConfig
    kube: Kube
    views: Views
    # "run" and "model" -> the queue their keys wait in (wired up in handlers/startup.py).
    queues: dict[str, WorkQueue] = field(default_factory=dict)
    phases: PhaseBook = field(default_factory=PhaseBook)
    written: dict[Key, Written] = field(default_factory=dict)
    active_jobs: set[Key] = field(default_factory=set)
    # uid -> (generation, spec facts) of a run (see sync_runs.facts_for).
    spec_facts: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    # run uid -> its Job as last seen by the operator itself: one it just created, until the watch
    # indexes it, or one that finished and was deleted (TTL) before the run's status caught up.
    known_jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Runs building and creating their Job's path at once (see sync_runs.ensure_run_children).
    run_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(RUN_SLOTS))
    # Events being posted (kept referenced until done).
    posting: set[asyncio.Task] = field(default_factory=set)

    def enqueue(self, key: Key) -> None:
        """Reconcile the object soon (see workqueue.py)."""
        self.queues[key[0]].add(key)

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
            self.known_jobs.pop(uid, None)
        self.written.pop(key, None)
        if key[0] in self.queues:
            self.queues[key[0]].forget(key)
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

    def post_event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Post an Event about ``obj`` in the background: a lost Event is logged, and never fails or
        repeats the reconcile that announced it."""
        event = build_event(obj, type_, reason, message, datetime.now(timezone.utc), self.cfg.instance)
        task = asyncio.get_running_loop().create_task(self._post(event))
        self.posting.add(task)
        task.add_done_callback(self.posting.discard)

    async def _post(self, event: dict[str, Any]) -> None:
        try:
            await self.kube.create(event)
        except Exception as error:  # noqa: BLE001 - see post_event
            involved = event["involvedObject"]
            logger.warning("could not post the %s event of %s %s/%s: %s", event["reason"], involved["kind"],
                           involved["namespace"], involved["name"], error)
