"""In-memory indexes kopf keeps from its watches, so reconciling reads nothing from the API.

kopf fills every index before any handler runs, so after a restart the handlers see every
Job that already exists and never create a duplicate.
"""

from __future__ import annotations

from typing import Any, Optional

import kopf

from .. import names
from .resources import DEPLOYMENTS, HPAS, JOBS, MODELS, PODS, RUNS, SERVICES

ManagedOnly = {names.LABEL_MANAGED_BY: names.OPERATOR_NAME}


CHILD_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion", "labels", "annotations",
                  "ownerReferences", "creationTimestamp", "deletionTimestamp")
# A run's own annotations (kopf's diff-base, kubectl's last-applied) are copies of its spec: not kept.
OWNER_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion", "labels", "creationTimestamp",
                  "deletionTimestamp")


def _slim(body: kopf.Body, keep: tuple[str, ...] = ("spec", "status"),
          spec_fields: Optional[tuple[str, ...]] = None, metadata: tuple[str, ...] = CHILD_METADATA) -> dict[str, Any]:
    """The parts of an object status computation reads (managedFields and the rest are dropped)."""
    meta = body.get("metadata", {})
    slim_meta = {k: meta[k] for k in metadata if k in meta}
    out: dict[str, Any] = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": slim_meta}
    out.update({k: body[k] for k in keep if k in body})
    if spec_fields is not None and "spec" in out:
        out["spec"] = {k: out["spec"][k] for k in spec_fields if k in out["spec"]}
    return out


_last_run: list[Any] = [None, None]


def _slim_run(body: kopf.Body) -> dict[str, Any]:
    """One slim copy per run version, shared by both run indexes (kopf calls them back to back)."""
    key = (body.get("metadata", {}).get("uid"), body.get("metadata", {}).get("resourceVersion"))
    if _last_run[0] != key:
        _last_run[:] = [key, _slim(body, metadata=OWNER_METADATA)]
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
    return {namespace: _slim(body, metadata=OWNER_METADATA)}


@kopf.index(*JOBS, labels=ManagedOnly)
def job_index(namespace: str, body: kopf.Body, **_: Any) -> Optional[dict[tuple[str, str], dict[str, Any]]]:
    """(namespace, run name) -> the run's Job."""
    owner = names.controller_owner(body, "CodexTrainingRun")
    return {(namespace, owner[0]): _slim(body, spec_fields=("suspend", "completions"))} if owner else None


@kopf.index(*PODS, labels=ManagedOnly)
def pod_index(namespace: str, body: kopf.Body, **_: Any) -> Optional[dict[tuple[str, str], dict[str, Any]]]:
    """(namespace, run name) -> the run's trainer pods."""
    run = names.owner_run_name(body)
    return {(namespace, run): _slim(body, keep=("status",))} if run else None


def _model_child(namespace: str, body: kopf.Body, keep: tuple[str, ...]) -> Optional[dict]:
    owner = names.controller_owner(body, "CodexModel")
    return {(namespace, owner[0]): _slim(body, keep)} if owner else None


@kopf.index(*DEPLOYMENTS, labels=ManagedOnly)
def deployment_index(namespace: str, body: kopf.Body, **_: Any) -> Optional[dict]:
    """(namespace, model name) -> the model's Deployment."""
    owner = names.controller_owner(body, "CodexModel")
    return {(namespace, owner[0]): _slim(body, spec_fields=("replicas",))} if owner else None


@kopf.index(*SERVICES, labels=ManagedOnly)
def service_index(namespace: str, body: kopf.Body, **_: Any) -> Optional[dict]:
    """(namespace, model name) -> the model's Service."""
    return _model_child(namespace, body, ())


@kopf.index(*HPAS, labels=ManagedOnly)
def hpa_index(namespace: str, body: kopf.Body, **_: Any) -> Optional[dict]:
    """(namespace, model name) -> the model's HorizontalPodAutoscaler."""
    return _model_child(namespace, body, ())
