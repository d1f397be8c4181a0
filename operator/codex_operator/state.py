"""What the operator keeps in memory between reconciles (kopf's memo carries one instance).

Everything remembered about one run or model lives in its :class:`Tracked` record, so a
deleted object is forgotten by dropping one entry. The concurrency limits come from
``cfg.limits`` (config.py), the only place they are set.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional, Sequence

from codex_api import GROUP_VERSION

from . import metrics
from .builders.event import build_event
from .config import OperatorConfig
from .k8s import Kube
from .status import status_patch
from .views import Views
from .workqueue import WorkQueue

logger = logging.getLogger(__name__)

# ("run" | "model", namespace, name)
Key = tuple[str, str, str]


def resource_version(obj: Optional[dict[str, Any]]) -> int:
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


@dataclass(slots=True)
class Written:
    """The status the operator last wrote, until the watch delivers an object at least as new."""

    resource_version: int
    status: dict[str, Any]


@dataclass(slots=True)
class Tracked:
    """What the operator remembers about one run or model between reconciles."""

    # The status last written, until the watch catches up with it.
    written: Optional[Written] = None
    # The spec's parsed view for the newest generation seen (sync_runs.RunView, sync_models.ModelView).
    view: Any = None
    # Runs: the Job as last seen by the operator itself: one it just created, until the watch
    # indexes it, or one that finished and was deleted (TTL) before the run's status caught up.
    job: Optional[dict[str, Any]] = None
    # Runs: the phase last computed and whether the Job is still running, for the gauges.
    phase: Optional[str] = None
    job_active: bool = False
    # Runs with code tasks: (samples run, samples in all) from the sandbox pod's newest log line.
    samples: Optional[tuple[int, int]] = None


@dataclass
class OperatorState:
    """One per operator process. Only the work queues' workers reconcile, one key at a time, so
    nothing here needs a lock."""

    cfg: OperatorConfig
    kube: Kube
    views: Views
    # "run" and "model" -> the queue their keys wait in (wired up in handlers/startup.py).
    queues: dict[str, WorkQueue] = field(default_factory=dict)
    tracked: dict[Key, Tracked] = field(default_factory=dict)
    # Runs by phase and running Jobs, kept in step with the records (exported as gauges).
    phase_counts: Counter = field(default_factory=Counter)
    active_jobs: int = 0
    # Runs building and creating their Job's path at once (see sync_runs.ensure_run_children).
    run_slots: asyncio.Semaphore = field(init=False)
    # Events being posted (kept referenced until done).
    posting: set[asyncio.Task] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.run_slots = asyncio.Semaphore(self.cfg.limits.run_slots)

    def enqueue(self, key: Key) -> None:
        """Reconcile the object soon (see workqueue.py)."""
        self.queues[key[0]].add(key)

    def enqueue_after(self, key: Key, delay: float) -> None:
        """Reconcile the object again in ``delay`` seconds (to follow something no watch reports)."""
        if key[0] in self.queues:
            self.queues[key[0]].add_after(key, delay)

    def record(self, key: Key) -> Tracked:
        """The object's record, created on first use."""
        tracked = self.tracked.get(key)
        if tracked is None:
            tracked = self.tracked[key] = Tracked()
        return tracked

    def forget(self, key: Key) -> None:
        """The object was deleted: drop everything remembered about it."""
        if key in self.tracked:
            self.set_run_phase(key, None)
            self.set_job_active(key, False)
            del self.tracked[key]
        if key[0] in self.queues:
            self.queues[key[0]].forget(key)

    def set_run_phase(self, key: Key, phase: Optional[str]) -> None:
        tracked = self.record(key)
        if tracked.phase != phase:
            self.phase_counts[tracked.phase] -= 1
            self.phase_counts[phase] += 1
            tracked.phase = phase
            metrics.export_run_counts(self.phase_counts)

    def set_job_active(self, key: Key, active: bool) -> None:
        tracked = self.record(key) if active else self.tracked.get(key)
        if tracked is not None and tracked.job_active != active:
            tracked.job_active = active
            self.active_jobs += 1 if active else -1
            metrics.ACTIVE_JOBS.set(self.active_jobs)

    def stored_status(self, key: Key, obj: dict[str, Any]) -> dict[str, Any]:
        """The freshest status known for ``obj``: the watched one, or what was just written if newer."""
        tracked = self.tracked.get(key)
        written = tracked.written if tracked is not None else None
        if written is not None and written.resource_version > resource_version(obj):
            return {**(obj.get("status") or {}), **written.status}
        if written is not None:
            tracked.written = None
        return dict(obj.get("status") or {})

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
        if patched is not None:
            self.record(key).written = Written(resource_version(patched), {k: computed.get(k) for k in owned})
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
