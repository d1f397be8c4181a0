"""The operator's own Deployment, for `make demo`, the tests and the manifests generated from it."""

from __future__ import annotations

from typing import Any, Optional

from ..config import DEFAULT_METRICS_PORT, ENV_METRICS_PORT, ENV_POD_IP
from .common import container_security_context, env_field, env_value, pod_security_context, sorted_env

LIVENESS_PORT = 8080
# Python objects straight from glibc malloc, in two arenas (not one per client thread), so that
# the operator's periodic malloc_trim (memory.py) hands the heap of a burst back to the OS.
OPERATOR_ENV = {"MALLOC_ARENA_MAX": "2", "PYTHONMALLOC": "malloc"}


# Both probes, as the chart's: Available once kopf serves its health endpoint, not once the process runs.
HEALTHZ = {"httpGet": {"path": "/healthz", "port": "healthz"}}


def build_operator_deployment(namespace: str, image: str, service_account: str, args: Optional[list[str]] = None,
                              env: Optional[dict[str, str]] = None, name: str = "codex-operator",
                              image_pull_policy: Optional[str] = None) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "codex-operator"}
    container: dict[str, Any] = {
        "name": "operator",
        "image": image,
        "command": ["codex-operator"],
        "args": list(args or []),
        "env": sorted_env([
            env_field(ENV_POD_IP, "status.podIP"),
            # kopf's peering identity (HA mode): the pod name.
            env_field("POD_ID", "metadata.name"),
            env_value(ENV_METRICS_PORT, str(DEFAULT_METRICS_PORT)),
            *(env_value(k, v) for k, v in sorted({**OPERATOR_ENV, **(env or {})}.items())),
        ]),
        "ports": [{"name": "healthz", "containerPort": LIVENESS_PORT, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": DEFAULT_METRICS_PORT, "protocol": "TCP"}],
        "livenessProbe": {**HEALTHZ, "periodSeconds": 20, "timeoutSeconds": 5, "failureThreshold": 3,
                          "initialDelaySeconds": 10},
        "readinessProbe": {**HEALTHZ, "periodSeconds": 10, "timeoutSeconds": 5},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if image_pull_policy:
        container["imagePullPolicy"] = image_pull_policy
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            # One operator at a time in standalone mode: the old one stops before the new one starts.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels,
                             "annotations": {"prometheus.io/scrape": "true",
                                             "prometheus.io/port": str(DEFAULT_METRICS_PORT)}},
                "spec": {
                    "serviceAccountName": service_account,
                    "automountServiceAccountToken": True,
                    "securityContext": pod_security_context(),
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }
