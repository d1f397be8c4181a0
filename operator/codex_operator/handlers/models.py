"""CodexModel handlers: resolve the adapter, apply Deployment/Service/HPA, report availability."""

from __future__ import annotations

from typing import Any, Optional

import kopf

from ..metrics import forget_model, instrument
from ..state import OperatorState
from ..sync_models import KIND, model_key, reconcile_model, select_owned
from .resources import MODELS


def live_children(model: dict[str, Any], deployment_index: kopf.Index, service_index: kopf.Index,
                  hpa_index: kopf.Index) -> dict[str, Optional[dict[str, Any]]]:
    """The model's live Deployment, Service and HPA, from the watches (no API read)."""
    meta = model["metadata"]
    key = (meta["namespace"], meta["name"])
    return {
        "Deployment": select_owned(deployment_index.get(key), meta["uid"]),
        "Service": select_owned(service_index.get(key), meta["uid"]),
        "HorizontalPodAutoscaler": select_owned(hpa_index.get(key), meta["uid"]),
    }


async def converge(body: kopf.Body, memo: kopf.Memo, runs_by_namespace: kopf.Index, deployment_index: kopf.Index,
                   service_index: kopf.Index, hpa_index: kopf.Index) -> None:
    state: OperatorState = memo.state
    model = dict(body)
    await reconcile_model(state, model, live_children(model, deployment_index, service_index, hpa_index),
                          runs_by_namespace.get(body.metadata.namespace) or ())


@kopf.on.create(*MODELS, retries=10, backoff=5)
@instrument(KIND)
async def create_model(body: kopf.Body, memo: kopf.Memo, runs_by_namespace: kopf.Index, deployment_index: kopf.Index,
                       service_index: kopf.Index, hpa_index: kopf.Index, **_: Any) -> None:
    await converge(body, memo, runs_by_namespace, deployment_index, service_index, hpa_index)


@kopf.on.update(*MODELS, field="spec", retries=10, backoff=5)
@instrument(KIND)
async def update_model(body: kopf.Body, memo: kopf.Memo, runs_by_namespace: kopf.Index, deployment_index: kopf.Index,
                       service_index: kopf.Index, hpa_index: kopf.Index, **_: Any) -> None:
    """Every spec change is honoured: the Deployment is patched and rolls if its template changed."""
    await converge(body, memo, runs_by_namespace, deployment_index, service_index, hpa_index)


@kopf.on.resume(*MODELS, retries=10, backoff=5)
@instrument(KIND)
async def resume_model(body: kopf.Body, memo: kopf.Memo, runs_by_namespace: kopf.Index, deployment_index: kopf.Index,
                       service_index: kopf.Index, hpa_index: kopf.Index, **_: Any) -> None:
    """After a restart the children are found in the indexes; only drift is written."""
    await converge(body, memo, runs_by_namespace, deployment_index, service_index, hpa_index)


@kopf.on.event(*MODELS)
async def on_model_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if type == "DELETED":
        memo.state.forget(model_key(body.metadata.namespace, body.metadata.name))
        forget_model(body.metadata.namespace, body.metadata.name)
