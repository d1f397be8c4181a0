"""Live progress: step, total, epoch, loss, ETA and stage, computed from the Trainer's state and handed to
the sinks (sinks.py: the run's status and the log)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, Callable, Optional

from codex_api.training_run import Progress
from transformers import TrainerCallback

from .sinks import Sink, record


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

    def record(self, field: str, value: dict[str, Any]) -> None:
        """``status.<field>`` to the sinks that keep it (status.memoryPlan from the prepare stage)."""
        record(self.sinks, field, value)

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
