"""Reconciling a CodexModel: resolve the adapter, apply the children, write status.

Level-triggered like runs (see workqueue.py): a model is queued by its own changes, its
children's, and those of the runs it may serve from.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Any, Iterable, Optional

import kopf
from codex_api import CodexModel, SpecError

from . import metrics, names, runtimes
from .builders.serving import build_hpa, build_service, endpoint
from .config import OperatorConfig
from .k8s import ApiError, NotOwnedError
from .refusals import ChildRefused, refuse
from .promotion import Resolution, references_run, resolve
from .specs import ModelView
from .ssa import apply_child
from .state import Key, OperatorState
from .status import MODEL_OWNED_FIELDS, compute_model_status
from .status.model import served_adapter_of
from .views import Views
from .workqueue import Requeue

KIND = "CodexModel"
# The children of a model, by kind, with their apiVersion.
CHILD_KINDS = {"Deployment": "apps/v1", "Service": "v1", "HorizontalPodAutoscaler": "autoscaling/v2"}


def model_key(namespace: str, name: str) -> tuple[str, str, str]:
    return ("model", namespace, name)


def model_view(state: OperatorState, key: Key, body: dict[str, Any]) -> ModelView:
    """The model's spec view for its generation: parsed once per generation, and kept (models are few,
    and every run event asks which of them serve from it)."""
    tracked = state.record(key)
    if tracked.view is None or not tracked.view.describes(body):
        tracked.view = ModelView.of(body)
    return tracked.view


def parsed_model(state: OperatorState, key: Key, body: dict[str, Any]) -> CodexModel:
    """The validated model; raises its SpecError naming the field."""
    view = model_view(state, key, body)
    if view.invalid is not None:
        raise view.invalid
    return view.model


def build_model_children(model: CodexModel, resolution: Resolution, cfg: OperatorConfig) -> dict[str, Optional[dict]]:
    """Desired children by kind, the Deployment from the model's runtime; None means the kind must not
    exist (an HPA without autoscaling)."""
    return {
        "Deployment": runtimes.build_deployment(model, resolution, cfg),
        "Service": build_service(model),
        "HorizontalPodAutoscaler": build_hpa(model),
    }


def select_owned(objs: Optional[Iterable[dict[str, Any]]], owner_uid: str) -> Optional[dict[str, Any]]:
    return next((o for o in objs or () if (names.controller_owner(o, KIND) or (None, None))[1] == owner_uid), None)


async def apply_model_children(state: OperatorState, body: dict[str, Any], children: dict[str, Optional[dict]],
                               live: dict[str, Optional[dict]]) -> Optional[dict[str, Any]]:
    """Apply the Deployment, Service and HPA (deleting a kind that must not exist); returns the live
    Deployment.

    A child the apiserver refuses raises :class:`ChildRefused`, once the children this pass created
    are removed again. Those that were there before stay: they serve the spec before this one, and a
    bad edit is no reason to stop serving.
    """
    meta = body["metadata"]
    result: dict[str, Optional[dict]] = {}
    made: list[dict[str, Any]] = []  # what this pass created
    for kind, api_version in CHILD_KINDS.items():
        desired, current = children[kind], live.get(kind)
        if desired is None:
            if current is not None:
                await state.kube.delete(api_version, kind, meta["namespace"], names.server_name(meta["name"]))
            continue
        try:
            result[kind], created = await apply_child(state.kube, desired, current, meta["uid"])
        except NotOwnedError as error:
            raise Requeue(f"{error}; waiting for it to be removed", delay=30)
        except ApiError as error:
            await refuse(state.kube, error, KIND, made[::-1])
        if created:
            made.append(desired)
    return result.get("Deployment")


async def write_model_status(state: OperatorState, body: dict[str, Any], stored: dict[str, Any],
                             computed: dict[str, Any]) -> None:
    meta = body["metadata"]
    metrics.MODEL_READY.labels(meta["namespace"], meta["name"]).set(computed.get("readyReplicas") or 0)
    if not await state.write_status(model_key(meta["namespace"], meta["name"]), KIND, meta, stored, computed,
                                    MODEL_OWNED_FIELDS):
        return
    before, after = stored.get("phase"), computed.get("phase")
    if before != after:
        state.post_event(body, "Warning" if after == "Degraded" else "Normal", str(after),
                         str(computed.get("message") or ""))
    served = served_adapter_of(computed)
    if served is not None and served != served_adapter_of(stored):
        state.post_event(body, "Normal", "AdapterPromoted",
                         f"serving {served.origin} revision {served.revision or 'unknown'}")


async def reconcile_model(state: OperatorState, key: Key) -> None:
    """Resolve the adapter, apply the children, write status: no API call when nothing changed.
    An invalid spec is reported in status and not retried (its next change queues it again)."""
    _, namespace, name = key
    body = state.views.model(namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    stored = state.stored_status(key, body)
    view, now = {**body, "status": stored}, datetime.now(timezone.utc)
    try:
        model = parsed_model(state, key, body)
        resolution = resolve(model, state.views.runs(namespace), served_adapter_of(stored))
        children = build_model_children(model, resolution, state.cfg) if resolution.ready else None
        if children is not None:
            kopf.append_owner_reference([c for c in children.values() if c], owner=body)
            deployment = await apply_model_children(state, body, children, live_children(state.views, body))
    except SpecError as error:  # invalid, or valid but not servable by its runtime (ServeSpecError)
        computed = compute_model_status(view, None, None, now, invalid=error)
    except ChildRefused as refused:  # not retried: this generation is invalid
        state.record(key).view = dataclasses.replace(state.record(key).view, model=None, invalid=refused.error)
        computed = compute_model_status(view, None, None, now, invalid=refused.error)
    else:
        if children is None:
            computed = compute_model_status(view, None, None, now, waiting=resolution.waiting)
        else:
            computed = compute_model_status(view, deployment, resolution.served_adapter, now,
                                            endpoint=endpoint(model))
    await write_model_status(state, body, stored, computed)


def live_children(views: Views, model: dict[str, Any]) -> dict[str, Optional[dict[str, Any]]]:
    """The model's live Deployment, Service and HPA, from the indexes (None: not indexed)."""
    meta = model["metadata"]
    key = (meta["namespace"], meta["name"])
    indexes = {"Deployment": views.deployment_index, "Service": views.service_index,
               "HorizontalPodAutoscaler": views.hpa_index}
    return {kind: select_owned(index.get(key), meta["uid"]) for kind, index in indexes.items()}


def models_serving_from(state: OperatorState, run: dict[str, Any]) -> list[Key]:
    """Keys of the models in the run's namespace whose fromTrainingRun may pick it."""
    keys = []
    for model in state.views.models(run["metadata"]["namespace"]):
        key = model_key(model["metadata"]["namespace"], model["metadata"]["name"])
        view = model_view(state, key, model)
        if view.model is not None and references_run(view.model, run):
            keys.append(key)  # an invalid model reports itself when reconciled
    return keys
