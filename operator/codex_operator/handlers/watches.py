"""Watches on what the runs and models own (and on runs, for the models that serve them).

Status follows these events: there is no polling loop. Each handler looks the owner up in
the indexes and recomputes its status, which writes only when something changed.
"""

from __future__ import annotations

from typing import Any

import kopf

from .. import metrics, names
from ..promotion import references_run
from ..state import OperatorState
from ..sync_models import parse_model, reconcile_model
from ..sync_runs import (
    KIND as RUN_KIND,
    TERMINAL,
    ensure_run_children,
    job_finished,
    parse_run,
    run_key,
    select_job,
    select_pods,
    sync_run_status,
)
from .models import live_children
from .resources import DEPLOYMENTS, HPAS, JOBS, PODS, RUNS, SERVICES

ManagedOnly = {names.LABEL_MANAGED_BY: names.OPERATOR_NAME}


def find_run(run_index: kopf.Index, namespace: str, name: str) -> dict[str, Any] | None:
    return next(iter(run_index.get((namespace, name)) or ()), None)


@kopf.on.event(*RUNS)
@metrics.instrument(RUN_KIND)
async def on_run_event(type: str, body: kopf.Body, memo: kopf.Memo, job_index: kopf.Index, pod_index: kopf.Index,
                       models_by_namespace: kopf.Index, runs_by_namespace: kopf.Index, deployment_index: kopf.Index,
                       service_index: kopf.Index, hpa_index: kopf.Index, **_: Any) -> None:
    """Progress written by the trainer can move the phase (Evaluating, Pushing); runs also feed models."""
    state: OperatorState = memo.state
    namespace, name = body.metadata.namespace, body.metadata.name
    if type == "DELETED":
        state.forget(run_key(namespace, name), body.metadata.uid)
        metrics.forget_run(namespace, name)
    else:
        metrics.record_progress(namespace, name, dict(body.get("status") or {}))
        job = select_job(job_index.get((namespace, name)), body.metadata.uid)
        # A new run's first status is written by create_run, with its Job.
        if job is not None or body.get("status"):
            await sync_run_status(state, dict(body), job, select_pods(pod_index.get((namespace, name)), job))
    for model in list(models_by_namespace.get(namespace) or ()):
        try:
            referenced = references_run(parse_model(model), body)
        except ValueError:
            continue
        if referenced:
            await reconcile_model(state, model, live_children(model, deployment_index, service_index, hpa_index),
                                  runs_by_namespace.get(namespace) or ())


@kopf.on.event(*JOBS, labels=ManagedOnly)
@metrics.instrument("Job")
async def on_job_event(type: str, body: kopf.Body, memo: kopf.Memo, run_index: kopf.Index, pod_index: kopf.Index,
                       **_: Any) -> None:
    state: OperatorState = memo.state
    owner = names.controller_owner(body, RUN_KIND)
    if owner is None:
        return
    namespace = body.metadata.namespace
    run = find_run(run_index, namespace, owner[0])
    key = run_key(namespace, owner[0])
    finished = job_finished(dict(body))
    (state.active_jobs.discard if type == "DELETED" or finished else state.active_jobs.add)(key)
    metrics.ACTIVE_JOBS.set(len(state.active_jobs))
    if run is None or run["metadata"].get("uid") != owner[1] or run["metadata"].get("deletionTimestamp"):
        return
    if type == "DELETED":
        await recreate_deleted_job(state, run, dict(body))
        return
    await sync_run_status(state, run, dict(body), select_pods(pod_index.get((namespace, owner[0])), body))


async def recreate_deleted_job(state: OperatorState, run: dict[str, Any], job: dict[str, Any]) -> None:
    """A Job deleted before it finished is recreated; the retry resumes from the checkpoint volume."""
    stored = state.stored_status(run_key(run["metadata"]["namespace"], run["metadata"]["name"]), run)
    if job_finished(job) or stored.get("phase") in TERMINAL:
        return
    live = await ensure_run_children(state, run, parse_run(run))
    await sync_run_status(state, run, live, [])


@kopf.on.event(*PODS, labels=ManagedOnly)
@metrics.instrument("Pod")
async def on_pod_event(body: kopf.Body, memo: kopf.Memo, run_index: kopf.Index, job_index: kopf.Index,
                       pod_index: kopf.Index, **_: Any) -> None:
    run_name = names.owner_run_name(body)
    if not run_name:
        return
    namespace = body.metadata.namespace
    run = find_run(run_index, namespace, run_name)
    if run is None:
        return
    job = select_job(job_index.get((namespace, run_name)), run["metadata"]["uid"])
    if job is not None:
        await sync_run_status(memo.state, run, job, select_pods(pod_index.get((namespace, run_name)), job))


async def on_model_child_event(body: kopf.Body, memo: kopf.Memo, models_by_namespace: kopf.Index,
                               runs_by_namespace: kopf.Index, deployment_index: kopf.Index,
                               service_index: kopf.Index, hpa_index: kopf.Index) -> None:
    owner = names.controller_owner(body, "CodexModel")
    if owner is None:
        return
    namespace = body.metadata.namespace
    model = next((m for m in models_by_namespace.get(namespace) or () if m["metadata"]["uid"] == owner[1]), None)
    if model is None or model["metadata"].get("deletionTimestamp"):
        return
    await reconcile_model(memo.state, model, live_children(model, deployment_index, service_index, hpa_index),
                          runs_by_namespace.get(namespace) or ())


@kopf.on.event(*DEPLOYMENTS, labels=ManagedOnly)
@metrics.instrument("Deployment")
async def on_deployment_event(body: kopf.Body, memo: kopf.Memo, models_by_namespace: kopf.Index,
                              runs_by_namespace: kopf.Index, deployment_index: kopf.Index,
                              service_index: kopf.Index, hpa_index: kopf.Index, **_: Any) -> None:
    """Rollout progress becomes the model's Available/Progressing/Degraded; a deleted one is recreated."""
    await on_model_child_event(body, memo, models_by_namespace, runs_by_namespace, deployment_index,
                               service_index, hpa_index)


@kopf.on.event(*SERVICES, labels=ManagedOnly)
@kopf.on.event(*HPAS, labels=ManagedOnly)
@metrics.instrument("ModelChild")
async def on_model_child_change(body: kopf.Body, memo: kopf.Memo, models_by_namespace: kopf.Index,
                                runs_by_namespace: kopf.Index, deployment_index: kopf.Index,
                                service_index: kopf.Index, hpa_index: kopf.Index, **_: Any) -> None:
    """A Service or HPA changed or deleted by hand is put back."""
    await on_model_child_event(body, memo, models_by_namespace, runs_by_namespace, deployment_index,
                               service_index, hpa_index)
