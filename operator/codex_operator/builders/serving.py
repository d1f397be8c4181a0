"""What every CodexModel runtime shares: its image, its refusals, and the Service and
HorizontalPodAutoscaler in front of its Deployment."""

from __future__ import annotations

from typing import Any, Optional

from codex_api import CodexModel, SpecError, runtimes

from .. import names
from ..config import OperatorConfig
from .common import metadata


class ServeSpecError(SpecError):
    """The spec asks for something its runtime cannot serve; the message starts with the field.

    Raised while building (a spec the apiserver accepts can still be unservable, e.g. vLLM without
    a GPU), it is a :class:`SpecError` like any other: reported as InvalidSpec, not retried."""

    def __init__(self, message: str):
        super().__init__([message])


def serving_image(model: CodexModel, cfg: OperatorConfig) -> str:
    """The server's image: spec.image, else the operator's image for spec.runtime (its
    ``--runtime-image``, else the catalogue's default, else the trainer image)."""
    runtime = model.spec.runtime
    return model.spec.image or cfg.runtime_image(runtime, runtimes.runtime(runtime).default_image)


def endpoint(model: CodexModel) -> str:
    """The in-cluster base URL of the OpenAI-compatible API."""
    service = names.server_name(model.metadata.name)
    return f"http://{service}.{model.metadata.namespace}.svc:{model.spec.service.port}/v1"


def build_service(model: CodexModel) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(names.server_name(model.metadata.name), model.metadata.namespace,
                             names.model_labels(model.metadata.name)),
        "spec": {
            "type": model.spec.service.type,
            "selector": names.model_selector(model.metadata.name),
            "ports": [{"name": "http", "port": model.spec.service.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def build_hpa(model: CodexModel) -> Optional[dict[str, Any]]:
    """None unless spec.autoscaling is set."""
    autoscaling = model.spec.autoscaling
    if autoscaling is None:
        return None
    name = names.server_name(model.metadata.name)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(name, model.metadata.namespace, names.model_labels(model.metadata.name)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": autoscaling.target_cpu_utilization},
            }}],
        },
    }
