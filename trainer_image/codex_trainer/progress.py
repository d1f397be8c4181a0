"""Live progress: step, total, epoch, loss, ETA and stage, sent to the run's status and the log.

Least privilege: the trainer's ServiceAccount may patch only its own run's ``/status``
subresource, and the trainer writes only ``status.progress`` (a JSON merge patch), at most
every ``min_interval`` seconds. The operator creates that Role and RoleBinding beside the Job,
not before it, and RBAC reaches the authorizer's cache a moment later still, so a refusal
(401/403/404) in the first ``grant_grace`` seconds is retried on the next update; after that it
stops the patching. Any failure logs one warning, and training carries on.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any, Callable, Optional, Protocol

from codex_api import API_GROUP, API_VERSION
from codex_api.training_run import PLURAL, Progress
from transformers import TrainerCallback

from .logs import event

log = logging.getLogger(__name__)


class Sink(Protocol):
    def __call__(self, progress: dict[str, Any], force: bool = False) -> None: ...


class StatusPatcher:
    """Merge-patches ``status.progress`` of one CodexTrainingRun through the status subresource."""

    def __init__(self, name: str, namespace: str, min_interval: float = 10.0, api: Any = None,
                 clock: Callable[[], float] = time.monotonic, grant_grace: float = 300.0):
        self.name, self.namespace = name, namespace
        self.min_interval = min_interval
        self.clock = clock
        self._grace_until = clock() + grant_grace
        self._api = api
        self._last = -float("inf")
        self._warned = False
        self._disabled = False

    def __call__(self, progress: dict[str, Any], force: bool = False) -> None:
        now = self.clock()
        if self._disabled or (not force and now - self._last < self.min_interval):
            return
        self._last = now
        try:
            self._client().patch_namespaced_custom_object_status(
                API_GROUP, API_VERSION, self.namespace, PLURAL, self.name, {"status": {"progress": progress}}
            )
        except Exception as error:  # any failure: warn once, keep training
            status = getattr(error, "status", None)
            if status in (401, 403, 404) and now >= self._grace_until:
                self._disabled = True  # no permission (or no run): retrying only adds load
            if not self._warned or self._disabled:  # the first failure, and the one that disables
                self._warned = True
                log.warning('{"event": "progress.patch_failed", "status": %s, "error": "%s", "next": "%s"}',
                            status or "null", type(error).__name__, "disabled" if self._disabled else "will retry")

    def _client(self) -> Any:
        if self._api is None:
            from kubernetes import client, config

            config.load_incluster_config()
            self._api = client.CustomObjectsApi()
        return self._api


class LogSink:
    """One ``progress`` log line at most every ``min_interval`` seconds (and on stage changes)."""

    def __init__(self, min_interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.min_interval, self.clock = min_interval, clock
        self._last = -float("inf")

    def __call__(self, progress: dict[str, Any], force: bool = False) -> None:
        now = self.clock()
        if force or now - self._last >= self.min_interval:
            self._last = now
            fields = {k: v for k, v in progress.items() if k != "stage"}
            event(progress.get("stage") or "train", "progress", **fields)


class ProgressTracker(TrainerCallback):
    """Computes :class:`~codex_api.training_run.Progress` from the Trainer's state and hands it to sinks."""

    def __init__(self, sinks: list[Sink], clock: Callable[[], float] = time.monotonic):
        self.sinks = sinks
        self.clock = clock
        self.stage: Optional[str] = None
        self.step = self.total_steps = 0
        self.epoch = 0.0
        self.loss: Optional[float] = None
        self._start: Optional[tuple[float, int]] = None

    def set_stage(self, stage: str) -> None:
        self.stage = stage
        self._emit(force=True)

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = (self.clock(), state.global_step)
        self._update(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])

    def on_step_end(self, args, state, control, **kwargs):
        self._update(state)

    def on_train_end(self, args, state, control, **kwargs):
        self._update(state, force=True)

    def _update(self, state, force: bool = False) -> None:
        if not state.is_world_process_zero:
            return
        self.step, self.total_steps, self.epoch = state.global_step, state.max_steps, float(state.epoch or 0.0)
        self._emit(force=force or (self.total_steps > 0 and self.step >= self.total_steps))

    def eta_seconds(self) -> Optional[int]:
        if self._start is None:
            return None
        started, first_step = self._start
        done = self.step - first_step
        if done <= 0 or self.total_steps <= 0:
            return None
        return max(0, round((self.clock() - started) / done * (self.total_steps - self.step)))

    def progress(self) -> dict[str, Any]:
        percent = int(100 * self.step / self.total_steps) if self.total_steps else 0
        return Progress(
            stage=self.stage, step=self.step, total_steps=self.total_steps, epoch=round(self.epoch, 4),
            loss=None if self.loss is None else round(self.loss, 6), eta_seconds=self.eta_seconds(),
            percent=min(max(percent, 0), 100), updated_at=dt.datetime.now(dt.timezone.utc).replace(microsecond=0),
        ).to_wire()

    def _emit(self, force: bool = False) -> None:
        snapshot = self.progress()
        for sink in self.sinks:
            sink(snapshot, force=force)
