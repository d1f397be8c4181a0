"""Watch handlers: every event only queues the key of the object to reconcile (workqueue.py).

Runs and models queue themselves; Jobs and pods queue the run that owns them; Deployments,
Services and HPAs the model that owns them; a run also queues the models that may serve from
it. There is no polling loop, and nothing here calls the API.
"""

from __future__ import annotations

from typing import Any

import kopf

from .. import metrics, names
from ..state import OperatorState
from ..sync_models import KIND as MODEL_KIND, model_key, models_serving_from
from ..sync_runs import KIND as RUN_KIND, job_finished, job_gone, run_key
from .resources import DEPLOYMENTS, HPAS, JOBS, MODELS, ManagedOnly, PODS, RUNS, SERVICES


@kopf.on.event(*RUNS)
async def on_run_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    state: OperatorState = memo.state
    namespace, name = body.metadata.namespace, body.metadata.name
    key = run_key(namespace, name)
    if type == "DELETED":
        state.forget(key)
        metrics.forget_run(namespace, name)
    else:
        metrics.record_progress(namespace, name, dict(body.get("status") or {}))
        state.enqueue(key)
    for model in models_serving_from(state, body):
        state.enqueue(model)


@kopf.on.event(*JOBS, labels=ManagedOnly)
async def on_job_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    state: OperatorState = memo.state
    owner = names.controller_owner(body, RUN_KIND)
    if owner is None:
        return
    key = run_key(body.metadata.namespace, owner[0])
    gone = type == "DELETED"
    state.set_job_active(key, not gone and not job_finished(body))
    if gone:
        job_gone(state, key, body)
    state.enqueue(key)


@kopf.on.event(*PODS, labels=ManagedOnly)
async def on_pod_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    run = names.owner_run_name(body)
    if run:
        memo.state.enqueue(run_key(body.metadata.namespace, run))


@kopf.on.event(*MODELS)
async def on_model_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    key = model_key(body.metadata.namespace, body.metadata.name)
    if type == "DELETED":
        memo.state.forget(key)
        metrics.forget_model(body.metadata.namespace, body.metadata.name)
    else:
        memo.state.enqueue(key)


@kopf.on.event(*DEPLOYMENTS, labels=ManagedOnly)
@kopf.on.event(*SERVICES, labels=ManagedOnly)
@kopf.on.event(*HPAS, labels=ManagedOnly)
async def on_model_child_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Rollout progress becomes the model's status; a child changed or deleted by hand is put back."""
    owner = names.controller_owner(body, MODEL_KIND)
    if owner is not None:
        memo.state.enqueue(model_key(body.metadata.namespace, owner[0]))
