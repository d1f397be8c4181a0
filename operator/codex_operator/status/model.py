"""compute_model_status: a CodexModel's phase and conditions from its Deployment."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping, Optional

from codex_api import SpecError
from codex_api.model import ServedAdapter

from .. import names
from ..conditions import find_condition, set_condition
from . import reasons

MODEL_OWNED_FIELDS = (
    "phase", "conditions", "observedGeneration", "endpoint", "readyReplicas", "replicas", "servedAdapter",
    "deploymentName", "message",
)


def served_adapter_of(status: Mapping[str, Any]) -> Optional[ServedAdapter]:
    """status.servedAdapter, typed: the wire dict is read only here (None when unset or unreadable)."""
    wire = status.get("servedAdapter")
    try:
        return ServedAdapter.model_validate(wire) if wire else None
    except ValueError:
        return None


def rollout_state(deployment: Mapping[str, Any]) -> tuple[bool, str]:
    """(done, message) the way ``kubectl rollout status`` decides it."""
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    generation = (deployment.get("metadata") or {}).get("generation") or 0
    wanted = spec.get("replicas", 1)
    updated = status.get("updatedReplicas") or 0
    total = status.get("replicas") or 0
    available = status.get("availableReplicas") or 0
    if (status.get("observedGeneration") or 0) < generation:
        return False, "waiting for the Deployment controller to observe the new template"
    if updated < wanted:
        return False, f"{updated} of {wanted} replicas run the new template"
    if total > updated:
        return False, f"{total - updated} old replicas are still serving while new ones start"
    if available < updated:
        return False, f"{available} of {updated} updated replicas are available"
    return True, f"{available} replicas serve the current adapter"


def _deployment_conditions(deployment: Mapping[str, Any]) -> tuple[bool, bool, str]:
    """(available, degraded, degraded message) from the Deployment's own conditions."""
    conditions = (deployment.get("status") or {}).get("conditions")
    available = (find_condition(conditions, "Available") or {}).get("status") == "True"
    progressing = find_condition(conditions, "Progressing") or {}
    failure = find_condition(conditions, "ReplicaFailure") or {}
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return available, True, progressing.get("message") or "the rollout exceeded its progress deadline"
    if failure.get("status") == "True":
        return available, True, failure.get("message") or "pods cannot be created"
    return available, False, ""


def _base(old: Mapping[str, Any], generation: Optional[int], endpoint: Optional[str]) -> dict[str, Any]:
    status = {key: old.get(key) for key in MODEL_OWNED_FIELDS}
    status.update(observedGeneration=generation, endpoint=endpoint)
    return status


# What a model's status concludes: (phase, Available, Progressing, Degraded, Ready, message), each
# condition as (status, reason).
State = tuple[str, str]
Verdict = tuple[str, State, State, State, State, str]


def compute_model_status(model: Mapping[str, Any], deployment: Optional[Mapping[str, Any]],
                         served_adapter: Optional[ServedAdapter], now: datetime, *,
                         endpoint: Optional[str] = None, waiting: Optional[str] = None,
                         invalid: Optional[SpecError] = None) -> dict[str, Any]:
    """The operator-owned status fields (MODEL_OWNED_FIELDS) of ``model``.

    ``served_adapter`` is the resolved adapter (None while waiting, with
    ``waiting`` saying for what), ``deployment`` the live Deployment or None.
    """
    old = model.get("status") or {}
    generation = (model.get("metadata") or {}).get("generation")
    status = _base(old, generation, endpoint)
    verdict: Verdict
    if invalid is not None:
        bad = ("False", reasons.INVALID_SPEC)
        verdict = ("Degraded", bad, bad, ("True", reasons.INVALID_SPEC), bad, str(invalid))
    elif served_adapter is None:
        wait = ("False", reasons.WAITING_FOR_TRAINING_RUN)
        status.update(servedAdapter=None, deploymentName=None, readyReplicas=0, replicas=0)
        verdict = ("Pending", wait, wait, ("False", reasons.AS_EXPECTED), wait, waiting or "waiting for a training run")
    else:
        status.update(servedAdapter=served_adapter.to_wire(),
                      deploymentName=names.server_name(model["metadata"]["name"]))
        dep_status = (deployment or {}).get("status") or {}
        status.update(readyReplicas=dep_status.get("readyReplicas") or 0, replicas=dep_status.get("replicas") or 0)
        verdict = _rollout_verdict(deployment, served_adapter, endpoint)
    phase, available, progressing, degraded, ready, message = verdict
    conditions = list(old.get("conditions") or [])
    for type_, (state, reason) in (("Available", available), ("Progressing", progressing), ("Degraded", degraded),
                                   ("Ready", ready)):
        conditions = set_condition(conditions, type_, state, reason, message, now, generation)
    status.update(phase=phase, conditions=conditions, message=message)
    return status


def _rollout_verdict(deployment: Optional[Mapping[str, Any]], served_adapter: ServedAdapter,
                     endpoint: Optional[str]) -> Verdict:
    """The verdict of a model that has an adapter to serve, from its Deployment (None: not created yet)."""
    if deployment is None:
        pending = ("False", reasons.DEPLOYMENT_PENDING)
        return ("Pending", pending, ("True", reasons.DEPLOYMENT_PENDING), ("False", reasons.AS_EXPECTED), pending,
                "creating the Deployment")
    done, rollout_message = rollout_state(deployment)
    available, degraded, degraded_message = _deployment_conditions(deployment)
    if degraded:
        return ("Degraded", ("True" if available else "False", reasons.DEPLOYMENT_DEGRADED),
                ("False", reasons.DEPLOYMENT_DEGRADED), ("True", reasons.DEPLOYMENT_DEGRADED),
                ("False", reasons.DEPLOYMENT_DEGRADED), degraded_message)
    if (deployment.get("spec") or {}).get("replicas", 1) == 0:
        zero = ("False", reasons.SCALED_TO_ZERO)
        return ("Available" if done else "Progressing", zero, ("False", reasons.SCALED_TO_ZERO),
                ("False", reasons.AS_EXPECTED), zero, "scaled to zero replicas")
    available_state = ("True", reasons.DEPLOYMENT_AVAILABLE) if available else ("False", reasons.NO_READY_REPLICAS)
    if not done or not available:
        ready_reason = reasons.ROLLING_OUT if not done else reasons.NO_READY_REPLICAS
        return ("Progressing", available_state, ("True", reasons.ROLLING_OUT), ("False", reasons.AS_EXPECTED),
                ("False", ready_reason), rollout_message)
    return ("Available", available_state, ("False", reasons.DEPLOYMENT_AVAILABLE), ("False", reasons.AS_EXPECTED),
            ("True", reasons.DEPLOYMENT_AVAILABLE),
            f"serving {_describe(served_adapter)} at {endpoint}" if endpoint else rollout_message)


def _describe(served: ServedAdapter) -> str:
    what = served.origin or "the adapter"
    return f"{what}@{served.revision[:12]}" if served.revision else what
