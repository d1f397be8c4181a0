"""A run with code tasks, stage after stage (codex_api.stages): when the training Job has
succeeded, the sandbox Job; when the sandbox has succeeded, the publish Job with its results.

Each next Job is created by the reconcile that first sees the one before it succeed (create is
idempotent: a 409 is verified to be the run's). A sandbox Job deleted before it finished is
created again; one that finished but whose pod, and so whose results, is gone is deleted and run
again. Nothing starts once the run's status is terminal.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, Optional

import kopf
from codex_api import stages

from . import names
from .builders.stages import build_publish_job, build_sandbox_job
from .conditions import find_condition
from .k8s import NORMAL
from .specs import RunView
from .state import Key, OperatorState
from .status.run import terminated_state, trainer_state
from .views import slim_job

KIND = "CodexTrainingRun"
# While the sandbox runs, its log is read this often for status.stages[sandbox].samplesDone.
PROGRESS_SECONDS = 10.0
# Log lines read back per look: the newest progress line is among them (programs print nothing there).
PROGRESS_TAIL_LINES = 5


def stage_of(job: Mapping[str, Any]) -> str:
    """The stage a Job runs: its annotation, or train for the training Job (which has none)."""
    return ((job.get("metadata") or {}).get("annotations") or {}).get(names.ANNOTATION_STAGE, stages.TRAIN)


def run_jobs(jobs: Optional[Iterable[dict[str, Any]]], run_uid: str) -> dict[str, dict[str, Any]]:
    """The run's Jobs by stage, among those indexed under its name (an older run's may linger)."""
    return {stage_of(j): j for j in jobs or () if (names.controller_owner(j, KIND) or (None, None))[1] == run_uid}


def succeeded(job: Optional[Mapping[str, Any]]) -> bool:
    conditions = ((job or {}).get("status") or {}).get("conditions")
    return (find_condition(conditions, "Complete") or {}).get("status") == "True"


def termination_message(pods: Iterable[Mapping[str, Any]]) -> Optional[str]:
    """The message of the pod that succeeded (the sandbox's SandboxReport), if one is still there."""
    return next(((terminated_state(p) or {}).get("message") or None for p in pods
                 if (terminated_state(p) or {}).get("exitCode") == 0), None)


async def _create(state: OperatorState, run: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    kopf.append_owner_reference(job, owner=run)
    live, _ = await state.kube.ensure(job, run["metadata"]["uid"], NORMAL)
    return slim_job(live)


async def advance(state: OperatorState, run: dict[str, Any], view: RunView, jobs: dict[str, dict[str, Any]],
                  pods_of, terminal: bool) -> dict[str, dict[str, Any]]:
    """Create the next stage's Job if the one before it succeeded; the run's Jobs by stage after.
    ``pods_of(job)`` gives a Job's pods."""
    if terminal or not succeeded(jobs.get(stages.TRAIN)) or stages.PUBLISH in jobs:
        return jobs
    sandbox = jobs.get(stages.SANDBOX)
    if sandbox is None:
        return {**jobs, stages.SANDBOX: await _create(state, run, build_sandbox_job(view.run(run), state.cfg))}
    if not succeeded(sandbox):
        return jobs
    message = termination_message(pods_of(sandbox))
    if message is None:  # its pod is gone with the results: run the sandbox again
        meta = sandbox["metadata"]
        await state.kube.delete("batch/v1", "Job", meta["namespace"], meta["name"])
        return {k: v for k, v in jobs.items() if k != stages.SANDBOX}
    return {**jobs, stages.PUBLISH: await _create(state, run, build_publish_job(view.run(run), state.cfg, message))}


def parse_progress(log: Optional[str]) -> Optional[tuple[int, int]]:
    """(done, total) from the newest progress line of the sandbox's log; None when there is none.
    Read defensively: anything but two sane integers is ignored."""
    for line in reversed((log or "").splitlines()):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == stages.PROGRESS_EVENT:
            done, total = entry.get("done"), entry.get("total")
            if isinstance(done, int) and isinstance(total, int) and 0 <= done <= total:
                return done, total
    return None


async def follow_sandbox(state: OperatorState, key: Key, jobs: Mapping[str, dict[str, Any]], pods_of) -> None:
    """While the sandbox runs, read how far it got from its log, and look again in PROGRESS_SECONDS."""
    sandbox = jobs.get(stages.SANDBOX)
    tracked = state.record(key)
    follow = sandbox is not None and stages.PUBLISH not in jobs
    running = [p for p in pods_of(sandbox) if trainer_state(p).get("running")] if follow else []
    if not running:
        return
    log = await state.kube.read_log(key[1], running[0]["metadata"]["name"], names.TRAINER_CONTAINER,
                                    PROGRESS_TAIL_LINES)
    tracked.samples = parse_progress(log) or tracked.samples
    state.enqueue_after(key, PROGRESS_SECONDS)
