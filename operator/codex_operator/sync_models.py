"""Reconciling a CodexModel: resolve the adapter, apply the children, write status.

Level-triggered like runs (see workqueue.py): a model is queued by its own changes, its
children's, and those of the runs it may serve from.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Optional

import kopf
from codex_api import CodexModel, SpecError, parse

from . import metrics, names
from .builders.common import object_hash
from .builders.deployment import build_deployment
from .builders.serving import build_hpa, build_service, endpoint
from .builders.vllm import VllmConfig, VllmSpecError, build_vllm_pod
from .config import OperatorConfig
from .k8s import NotOwnedError
from .promotion import Resolution, references_run, resolve
from .state import Key, OperatorState
from .status import MODEL_OWNED_FIELDS, compute_model_status
from .views import Views
from .workqueue import Requeue

KIND = "CodexModel"
CHILD_KINDS = ("Deployment", "Service", "HorizontalPodAutoscaler")


def model_key(namespace: str, name: str) -> tuple[str, str, str]:
    return ("model", namespace, name)


def parse_model(body: dict[str, Any]) -> CodexModel:
    return parse(CodexModel, {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in body})


def build_runtime_deployment(model: CodexModel, resolution: Resolution, cfg: OperatorConfig) -> dict[str, Any]:
    """The builtin codex-serve Deployment, or the same Deployment around builders.vllm's pod pieces."""
    base, served = resolution.base_model, resolution.served_adapter
    if model.spec.runtime == "vllm":
        pod = build_vllm_pod(model, base, served, VllmConfig.from_operator(cfg), lora_rank=resolution.lora_rank)
        return build_deployment(model, base, served, cfg, container=pod.container,
                                init_containers=pod.init_containers, extra_volumes=pod.extra_volumes)
    return build_deployment(model, base, served, cfg)


def build_model_children(model: CodexModel, resolution: Resolution, cfg: OperatorConfig) -> dict[str, Optional[dict]]:
    """Desired children by kind; None means the kind must not exist (an HPA without autoscaling)."""
    children = {
        "Deployment": build_runtime_deployment(model, resolution, cfg),
        "Service": build_service(model),
        "HorizontalPodAutoscaler": build_hpa(model),
    }
    for child in children.values():
        if child is not None:
            child["metadata"].setdefault("annotations", {})[names.ANNOTATION_DESIRED_HASH] = object_hash(child)
    return children


def select_owned(objs: Optional[Iterable[dict[str, Any]]], owner_uid: str) -> Optional[dict[str, Any]]:
    return next((o for o in objs or () if (names.controller_owner(o, KIND) or (None, None))[1] == owner_uid), None)


async def apply_child(state: OperatorState, desired: Optional[dict[str, Any]], live: Optional[dict[str, Any]],
                      owner_uid: str, api_version: str, kind: str, namespace: str, name: str) -> Optional[dict]:
    """Make the live child match ``desired``: create, patch when its desired-hash differs, or delete."""
    if desired is None:
        if live is not None:
            await state.kube.delete(api_version, kind, namespace, name)
        return None
    wanted = desired["metadata"]["annotations"][names.ANNOTATION_DESIRED_HASH]
    if live is None:
        try:
            live, created = await state.kube.ensure(desired, owner_uid)
        except NotOwnedError as error:
            raise Requeue(f"{error}; waiting for it to be removed", delay=30)
        if created:
            return live
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    if annotations.get(names.ANNOTATION_DESIRED_HASH) == wanted:
        return live
    patch = {"metadata": {"labels": desired["metadata"]["labels"], "annotations": desired["metadata"]["annotations"]},
             "spec": desired["spec"]}
    return await state.kube.patch(api_version, kind, namespace, name, patch) or live


async def apply_model_children(state: OperatorState, body: dict[str, Any], children: dict[str, Optional[dict]],
                               live: dict[str, Optional[dict]]) -> Optional[dict[str, Any]]:
    """Apply the Deployment, Service and HPA; returns the live Deployment."""
    meta = body["metadata"]
    name = names.server_name(meta["name"])
    api_versions = {"Deployment": "apps/v1", "Service": "v1", "HorizontalPodAutoscaler": "autoscaling/v2"}
    result = {}
    for kind in CHILD_KINDS:
        result[kind] = await apply_child(state, children[kind], live.get(kind), meta["uid"], api_versions[kind], kind,
                                         meta["namespace"], name)
    return result["Deployment"]


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
    if (stored.get("servedAdapter") or {}) != (computed.get("servedAdapter") or {}) and computed.get("servedAdapter"):
        served = computed["servedAdapter"]
        state.post_event(body, "Normal", "AdapterPromoted",
                         f"serving {served.get('trainingRun') or served.get('repo') or served.get('claimName')} "
                         f"revision {served.get('revision', 'unknown')}")


async def reconcile_model(state: OperatorState, key: Key) -> None:
    """Resolve the adapter, apply the children, write status: no API call when nothing changed.
    An invalid spec is reported in status and not retried (its next change queues it again)."""
    _, namespace, name = key
    body = state.views.model(namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    stored = state.stored_status(key, body)
    view = {**body, "status": stored}
    now = datetime.now(timezone.utc)
    try:
        model = parse_model(body)
    except SpecError as error:
        await write_model_status(state, body, stored, compute_model_status(view, None, None, now, invalid=error))
        return
    resolution = resolve(model, state.views.runs(namespace), stored.get("servedAdapter"))
    if resolution.served_adapter is None or resolution.base_model is None:
        computed = compute_model_status(view, None, None, now, endpoint=None, waiting=resolution.waiting)
        await write_model_status(state, body, stored, computed)
        return
    try:
        children = build_model_children(model, resolution, state.cfg)
    except VllmSpecError as error:
        invalid = SpecError([str(error)])
        await write_model_status(state, body, stored, compute_model_status(view, None, None, now, invalid=invalid))
        return
    kopf.append_owner_reference([c for c in children.values() if c], owner=body)
    deployment = await apply_model_children(state, body, children, live_children(state.views, body))
    computed = compute_model_status(view, deployment, resolution.served_adapter, now, endpoint=endpoint(model))
    await write_model_status(state, body, stored, computed)


def live_children(views: Views, model: dict[str, Any]) -> dict[str, Optional[dict[str, Any]]]:
    """The model's live Deployment, Service and HPA, from the indexes."""
    meta = model["metadata"]
    key = (meta["namespace"], meta["name"])
    return {
        "Deployment": select_owned(views.deployment_index.get(key), meta["uid"]),
        "Service": select_owned(views.service_index.get(key), meta["uid"]),
        "HorizontalPodAutoscaler": select_owned(views.hpa_index.get(key), meta["uid"]),
    }


def models_serving_from(views: Views, run: dict[str, Any]) -> list[Key]:
    """Keys of the models in the run's namespace whose fromTrainingRun may pick it."""
    keys = []
    for model in views.models(run["metadata"]["namespace"]):
        try:
            referenced = references_run(parse_model(model), run)
        except ValueError:
            continue  # an invalid model reports itself when reconciled
        if referenced:
            keys.append(model_key(model["metadata"]["namespace"], model["metadata"]["name"]))
    return keys
