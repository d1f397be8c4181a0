"""Prometheus metrics of the operator, served by prometheus-client on /metrics.

Reconcile counters and timings by kind, runs by phase, active Jobs, gate failures,
model ready replicas, and per-run training progress for dashboards.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Awaitable, Callable, Mapping, Optional, TypeVar, get_args

from codex_api.training_run import Phase
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from .workqueue import Requeue

PREFIX = "codex_operator"
PHASES = get_args(Phase)

RECONCILES = Counter(f"{PREFIX}_reconcile_total", "Reconciles, by kind.", ["kind"])
RECONCILE_ERRORS = Counter(f"{PREFIX}_reconcile_errors_total", "Reconciles that failed (retried with backoff), by kind and error.",
                           ["kind", "error"])
RECONCILE_SECONDS = Histogram(f"{PREFIX}_reconcile_duration_seconds", "Reconcile duration, by kind.", ["kind"],
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
API_REQUESTS = Counter(f"{PREFIX}_api_requests_total", "Requests the operator's own client sent, by verb and kind.",
                       ["verb", "kind"])
RUNS = Gauge(f"{PREFIX}_training_runs", "CodexTrainingRuns, by phase.", ["phase"])
ACTIVE_JOBS = Gauge(f"{PREFIX}_active_jobs", "Training Jobs that have not finished.")
CHILDREN_SECONDS = Histogram(f"{PREFIX}_run_children_seconds",
                             "Time to create (or find) a run's children: the Job's path, then its Role and RoleBinding.",
                             buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16))
JOB_DURATION = Histogram(f"{PREFIX}_job_duration_seconds", "Wall time from Job creation to the run's end, by outcome.",
                         ["phase"], buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200))
GATE_FAILURES = Counter(f"{PREFIX}_gate_failures_total", "Runs that ended with GatesNotMet.")
STATUS_WRITES = Counter(f"{PREFIX}_status_writes_total", "Status patches written, by kind.", ["kind"])
MODEL_READY = Gauge(f"{PREFIX}_model_ready_replicas", "Ready replicas of each CodexModel.", ["namespace", "model"])
RUN_PROGRESS = Gauge("codex_training_progress_percent", "Training progress of each run (0-100).",
                     ["namespace", "run"])
RUN_STEP = Gauge("codex_training_step", "Optimizer step each run reached.", ["namespace", "run"])
RUN_LOSS = Gauge("codex_training_loss", "Latest training loss of each run.", ["namespace", "run"])
RUN_EVAL_LOSS = Gauge("codex_training_eval_loss", "Eval loss of each finished run.", ["namespace", "run"])

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def instrument(kind: str) -> Callable[[F], F]:
    """Count and time a reconcile; failures are counted by class and re-raised for the work queue
    (a Requeue is waiting, not failing)."""
    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            RECONCILES.labels(kind).inc()
            started = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            except Requeue:
                raise
            except Exception as error:
                RECONCILE_ERRORS.labels(kind, type(error).__name__).inc()
                raise
            finally:
                RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)
        return wrapper  # type: ignore[return-value]
    return decorate


def export_run_counts(counts: Mapping[Optional[str], int]) -> None:
    """Set the runs-by-phase gauge from the operator's counts (state.OperatorState.phase_counts)."""
    for name in PHASES:
        RUNS.labels(name).set(counts.get(name, 0))


def record_progress(namespace: str, run: str, status: dict[str, Any]) -> None:
    progress = status.get("progress") or {}
    if progress:
        RUN_PROGRESS.labels(namespace, run).set(progress.get("percent") or 0)
        RUN_STEP.labels(namespace, run).set(progress.get("step") or 0)
        if progress.get("loss") is not None:
            RUN_LOSS.labels(namespace, run).set(progress["loss"])
    eval_loss = (status.get("metrics") or {}).get("evalLoss")
    if eval_loss is not None:
        RUN_EVAL_LOSS.labels(namespace, run).set(eval_loss)


def forget_run(namespace: str, run: str) -> None:
    for gauge in (RUN_PROGRESS, RUN_STEP, RUN_LOSS, RUN_EVAL_LOSS):
        try:
            gauge.remove(namespace, run)
        except KeyError:
            pass


def forget_model(namespace: str, model: str) -> None:
    try:
        MODEL_READY.remove(namespace, model)
    except KeyError:
        pass


def serve(port: int, host: str) -> None:
    start_http_server(port, addr=host)


