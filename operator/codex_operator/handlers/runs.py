"""CodexTrainingRun handlers: create the children, honour spec changes, resume after a restart."""

from __future__ import annotations

from typing import Any

import kopf
from codex_api import CodexTrainingRunSpec, SpecError, check_transition, parse_spec

from ..metrics import instrument
from ..state import OperatorState
from ..sync_runs import (
    TERMINAL,
    apply_spec_configmap,
    ensure_run_children,
    parse_run,
    patch_job_fields,
    select_job,
    select_pods,
    sync_run_status,
)
from .resources import RUNS

KIND = "CodexTrainingRun"


async def reject_invalid(state: OperatorState, body: kopf.Body, error: SpecError, jobs: Any, pods: Any) -> None:
    """Write InvalidSpec (Ready=False, the field in the message), then stop retrying."""
    job = select_job(jobs, body.metadata.uid)
    await sync_run_status(state, dict(body), job, select_pods(pods, job))
    raise kopf.PermanentError(str(error))


def refused_changes(spec: CodexTrainingRunSpec, old: Any) -> list[str]:
    """Messages of the immutable fields a change touched (the CRD's CEL rules refuse these first)."""
    try:
        return check_transition(spec, parse_spec(CodexTrainingRunSpec, old))
    except SpecError:
        return []  # the old spec never ran


@kopf.on.create(*RUNS, retries=10, backoff=5)
@instrument(KIND)
async def create_run(body: kopf.Body, memo: kopf.Memo, job_index: kopf.Index, pod_index: kopf.Index,
                     **_: Any) -> None:
    state: OperatorState = memo.state
    key = (body.metadata.namespace, body.metadata.name)
    try:
        run = parse_run(dict(body))
    except SpecError as error:
        await reject_invalid(state, body, error, job_index.get(key), pod_index.get(key))
    job = await ensure_run_children(state, dict(body), run)
    await sync_run_status(state, dict(body), job, select_pods(pod_index.get(key), job))


@kopf.on.resume(*RUNS, retries=10, backoff=5)
@instrument(KIND)
async def resume_run(body: kopf.Body, status: kopf.Status, memo: kopf.Memo, job_index: kopf.Index,
                     pod_index: kopf.Index, **_: Any) -> None:
    """After a restart: the Job is found in the index (never duplicated); a missing one is recreated
    unless the run already finished (a TTL-deleted Job is expected then)."""
    state: OperatorState = memo.state
    key = (body.metadata.namespace, body.metadata.name)
    job = select_job(job_index.get(key), body.metadata.uid)
    if job is None and status.get("phase") not in TERMINAL:
        try:
            run = parse_run(dict(body))
        except SpecError as error:
            await reject_invalid(state, body, error, None, None)
        job = await ensure_run_children(state, dict(body), run)
    await sync_run_status(state, dict(body), job, select_pods(pod_index.get(key), job))


@kopf.on.update(*RUNS, field="spec", retries=10, backoff=5)
@instrument(KIND)
async def update_run(body: kopf.Body, old: Any, new: Any, status: kopf.Status, memo: kopf.Memo,
                     job_index: kopf.Index, pod_index: kopf.Index, **_: Any) -> None:
    """Honour what a live Job can take (suspend, deadline, TTL, the spec file for the next attempt);
    the SpecApplied condition explains what it cannot."""
    state: OperatorState = memo.state
    key = (body.metadata.namespace, body.metadata.name)
    job = select_job(job_index.get(key), body.metadata.uid)
    try:
        run = parse_run(dict(body))
    except SpecError as error:
        await reject_invalid(state, body, error, job_index.get(key), pod_index.get(key))
    refused = refused_changes(run.spec, old) if job is not None else []
    if refused:
        await sync_run_status(state, dict(body), job, select_pods(pod_index.get(key), job))
        raise kopf.PermanentError("; ".join(refused))
    if job is None and status.get("phase") not in TERMINAL:
        job = await ensure_run_children(state, dict(body), run)
    elif job is not None:
        await apply_spec_configmap(state, run, dict(body))
        await patch_job_fields(state, run, job)
    await sync_run_status(state, dict(body), job, select_pods(pod_index.get(key), job))
