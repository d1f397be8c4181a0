"""In-memory indexes kopf keeps from its watches, so reconciling reads nothing from the API.

The index functions are coroutines that never await: kopf runs a plain function in a thread of
its executor, which costs a thread hop and two loop wake-ups per index per event; a coroutine it
runs on its loop.

Each holds slim copies (views.slim): what reconciling reads, without managedFields. The
reconcilers read them through :class:`codex_operator.views.Views`.
"""

from __future__ import annotations

from typing import Any, Optional

import kopf

from .. import names
from ..k8s import FIELD_MANAGER
from ..ssa import applied_fields
from ..views import OWNER_METADATA, slim, slim_job, slim_pod
from .resources import DEPLOYMENTS, HPAS, JOBS, MODELS, ManagedOnly, PODS, RUNS, SERVICES


@kopf.index(*RUNS)
async def run_index(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """(namespace, name) -> the run: the one slim copy of each run the operator keeps."""
    return {(namespace, name): slim(body, metadata=OWNER_METADATA)}


@kopf.index(*RUNS)
async def run_names(namespace: str, name: str, **_: Any) -> dict[str, str]:
    """namespace -> the names of its runs (looked up in run_index), for resolving
    CodexModel.spec.adapter.fromTrainingRun."""
    return {namespace: name}


@kopf.index(*MODELS)
async def models_by_namespace(namespace: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """namespace -> its models, to re-resolve them when a run changes."""
    return {namespace: slim(body, metadata=OWNER_METADATA)}


@kopf.index(*JOBS, labels=ManagedOnly)
async def job_index(namespace: str, body: kopf.Body, **_: Any) -> Optional[dict[tuple[str, str], dict[str, Any]]]:
    """(namespace, run name) -> the run's Job."""
    owner = names.controller_owner(body, "CodexTrainingRun")
    return {(namespace, owner[0]): slim_job(body)} if owner else None


@kopf.index(*PODS, labels=ManagedOnly)
async def pod_index(namespace: str, body: kopf.Body, **_: Any) -> Optional[dict[tuple[str, str], dict[str, Any]]]:
    """(namespace, run name) -> the run's trainer pods."""
    run = names.owner_run_name(body)
    return {(namespace, run): slim_pod(body, names.TRAINER_CONTAINER)} if run else None


def _model_child(namespace: str, body: kopf.Body, keep: tuple[str, ...]) -> Optional[dict]:
    """(namespace, model name) -> the child, with what ssa.needs_apply compares: its spec and the
    fields the operator applied (the one managedFields entry kept)."""
    owner = names.controller_owner(body, "CodexModel")
    if owner is None:
        return None
    child = slim(body, keep)
    fields = applied_fields(body)
    if fields is not None:
        child["metadata"]["managedFields"] = [{"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": fields}]
    return {(namespace, owner[0]): child}


@kopf.index(*DEPLOYMENTS, labels=ManagedOnly)
async def deployment_index(namespace: str, body: kopf.Body, **_: Any) -> Optional[dict]:
    """(namespace, model name) -> the model's Deployment (its status is the model's)."""
    return _model_child(namespace, body, ("spec", "status"))


@kopf.index(*SERVICES, labels=ManagedOnly)
async def service_index(namespace: str, body: kopf.Body, **_: Any) -> Optional[dict]:
    """(namespace, model name) -> the model's Service."""
    return _model_child(namespace, body, ("spec",))


@kopf.index(*HPAS, labels=ManagedOnly)
async def hpa_index(namespace: str, body: kopf.Body, **_: Any) -> Optional[dict]:
    """(namespace, model name) -> the model's HorizontalPodAutoscaler."""
    return _model_child(namespace, body, ("spec",))
