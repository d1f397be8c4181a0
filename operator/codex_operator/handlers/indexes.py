"""In-memory indexes kopf keeps from its watches, so reconciling reads nothing from the API.

Each holds slim copies (views.slim): what reconciling reads, without managedFields. The
reconcilers read them through :class:`codex_operator.views.Views`.
"""

from __future__ import annotations

from typing import Any, Optional

import kopf

from .. import names
from ..k8s import FIELD_MANAGER
from ..ssa import applied_fields
from ..views import OWNER_METADATA, slim, slim_job
from .resources import DEPLOYMENTS, HPAS, JOBS, MODELS, ManagedOnly, PODS, RUNS, SERVICES


_last_run: list[Any] = [None, None]


def _slim_run(body: kopf.Body) -> dict[str, Any]:
    """One slim copy per run version, shared by both run indexes (kopf calls them back to back)."""
    key = (body.get("metadata", {}).get("uid"), body.get("metadata", {}).get("resourceVersion"))
    if _last_run[0] != key:
        _last_run[:] = [key, slim(body, metadata=OWNER_METADATA)]
    return _last_run[1]


@kopf.index(*RUNS)
def run_index(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """(namespace, name) -> the run."""
    return {(namespace, name): _slim_run(body)}


@kopf.index(*RUNS)
def runs_by_namespace(namespace: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """namespace -> its runs, for resolving CodexModel.spec.adapter.fromTrainingRun."""
    return {namespace: _slim_run(body)}


@kopf.index(*MODELS)
def models_by_namespace(namespace: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """namespace -> its models, to re-resolve them when a run changes."""
    return {namespace: slim(body, metadata=OWNER_METADATA)}


@kopf.index(*JOBS, labels=ManagedOnly)
def job_index(namespace: str, body: kopf.Body, **_: Any) -> Optional[dict[tuple[str, str], dict[str, Any]]]:
    """(namespace, run name) -> the run's Job."""
    owner = names.controller_owner(body, "CodexTrainingRun")
    return {(namespace, owner[0]): slim_job(body)} if owner else None


@kopf.index(*PODS, labels=ManagedOnly)
def pod_index(namespace: str, body: kopf.Body, **_: Any) -> Optional[dict[tuple[str, str], dict[str, Any]]]:
    """(namespace, run name) -> the run's trainer pods."""
    run = names.owner_run_name(body)
    return {(namespace, run): slim(body, keep=("status",))} if run else None


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
def deployment_index(namespace: str, body: kopf.Body, **_: Any) -> Optional[dict]:
    """(namespace, model name) -> the model's Deployment (its status is the model's)."""
    return _model_child(namespace, body, ("spec", "status"))


@kopf.index(*SERVICES, labels=ManagedOnly)
def service_index(namespace: str, body: kopf.Body, **_: Any) -> Optional[dict]:
    """(namespace, model name) -> the model's Service."""
    return _model_child(namespace, body, ("spec",))


@kopf.index(*HPAS, labels=ManagedOnly)
def hpa_index(namespace: str, body: kopf.Body, **_: Any) -> Optional[dict]:
    """(namespace, model name) -> the model's HorizontalPodAutoscaler."""
    return _model_child(namespace, body, ("spec",))
