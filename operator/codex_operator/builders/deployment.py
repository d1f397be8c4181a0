"""The builtin runtime: a Deployment running ``codex-serve`` with the resolved adapter."""

from __future__ import annotations

from typing import Any, Optional

from codex_api import CodexModel, paths
from codex_api.common import ModelSource
from codex_api.model import ServedAdapter

from .. import names
from ..config import OperatorConfig
from .common import (container_security_context, env_value, metadata, pod_security_context, resource_requirements,
                     secret_envs, serving_pod_env, sorted_env, tolerations, volume_name)
from .serving import ServeSpecError, serving_image

SERVER_PORT = 8000
TMP_DIR = "/tmp"


def adapter_revision(served_adapter: ServedAdapter) -> str:
    """What the pod-template annotation carries: a new value rolls the Deployment."""
    parts = [served_adapter.origin, served_adapter.revision or served_adapter.path]
    return "@".join(p for p in parts if p)


def hub_spec(repo: str, revision: Optional[str]) -> str:
    return f"hub:{repo}@{revision}" if revision else f"hub:{repo}"


def base_model_arg(source: ModelSource) -> str:
    """codex-serve --base-model: ``embedded:<name>``, ``hub:<repo>[@rev]`` or a directory on a mounted PVC."""
    if source.hub:
        return hub_spec(source.hub, source.revision)
    if source.pvc:
        return str(paths.pvc_dir(source.pvc.claim_name) / source.pvc.path.lstrip("/"))
    return f"embedded:{source.embedded}"


def adapter_arg(served_adapter: ServedAdapter) -> str:
    """codex-serve --adapter: a directory on a mounted PVC, or ``hub:<repo>[@rev]`` (downloaded at start)."""
    if served_adapter.claim_name:
        return str(paths.pvc_dir(served_adapter.claim_name) / (served_adapter.path or "/").lstrip("/"))
    if served_adapter.repo:
        return hub_spec(served_adapter.repo, served_adapter.revision)
    raise ServeSpecError("status.servedAdapter: neither a Hub repo nor a PVC; nothing to serve")


def claims(base: ModelSource, served_adapter: ServedAdapter) -> list[str]:
    found = {served_adapter.claim_name, base.pvc.claim_name if base.pvc else None}
    return sorted(c for c in found if c)


def hub_token_ref(model: CodexModel, base: ModelSource):
    if model.spec.adapter.hub is not None and model.spec.adapter.hub.token_secret_ref is not None:
        return model.spec.adapter.hub.token_secret_ref
    return base.token_secret_ref


def server_args(model: CodexModel, base: ModelSource, served_adapter: ServedAdapter) -> list[str]:
    server = model.spec.server
    args = [
        "--host", "$(POD_IP)",
        "--port", str(SERVER_PORT),
        "--model-name", model.metadata.name,
        "--base-model", base_model_arg(base),
        "--adapter", adapter_arg(served_adapter),
        "--max-new-tokens", str(server.max_new_tokens),
        "--max-prompt-tokens", str(server.max_prompt_tokens),
        "--max-concurrency", str(server.max_concurrency),
    ]
    if not server.mask_secrets:
        args.append("--no-mask-secrets")
    if server.merge_adapter:
        args.append("--merge-adapter")
    if server.dtype != "auto":
        args += ["--dtype", server.dtype]
    return args


def server_env(model: CodexModel, base: ModelSource) -> list[dict[str, Any]]:
    return sorted_env([
        *serving_pod_env(),
        env_value("TMPDIR", TMP_DIR),
        *secret_envs([(paths.ENV_API_KEY, model.spec.server.api_key_secret_ref),
                      (paths.ENV_HF_TOKEN, hub_token_ref(model, base))]),
    ])


def server_volumes(base: ModelSource, served_adapter: ServedAdapter) -> tuple[list[dict], list[dict]]:
    volumes = [{"name": "hf-home", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]
    mounts = [{"name": "hf-home", "mountPath": str(paths.HF_HOME)}, {"name": "tmp", "mountPath": TMP_DIR}]
    for claim in claims(base, served_adapter):
        volumes.append({"name": volume_name("pvc", claim),
                        "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": volume_name("pvc", claim), "mountPath": str(paths.pvc_dir(claim)), "readOnly": True})
    return volumes, mounts


def http_probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "failureThreshold": failures,
            "timeoutSeconds": 5}


def build_server_container(model: CodexModel, base: ModelSource, served_adapter: ServedAdapter,
                           cfg: OperatorConfig) -> dict[str, Any]:
    """The codex-serve container of the builtin runtime."""
    resources = model.spec.resources
    _, mounts = server_volumes(base, served_adapter)
    container: dict[str, Any] = {
        "name": names.SERVER_CONTAINER,
        "image": serving_image(model, cfg),
        "command": ["codex-serve"],
        "args": server_args(model, base, served_adapter),
        "env": server_env(model, base),
        "ports": [{"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"}],
        "readinessProbe": http_probe("/readyz", 2, 3),
        "livenessProbe": http_probe("/healthz", 10, 3),
        # Loading a model can take minutes; liveness starts counting once the server answers.
        "startupProbe": http_probe("/healthz", 2, 300),
        "resources": resource_requirements(resources.cpu, resources.memory, resources.gpus,
                                           resources.gpu_resource_name, cfg.server_resources),
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    if cfg.image_pull_policy:
        container["imagePullPolicy"] = cfg.image_pull_policy
    return container


# A pod being replaced keeps serving this long before its server gets SIGTERM: the EndpointSlice
# update and every node's kube-proxy take a moment to stop sending it new connections, and a
# request that arrives meanwhile must not be refused (the rollout promises zero failed requests).
# The sleep action needs no shell in the image (Kubernetes >= 1.30).
DRAIN_SECONDS = 5
DRAIN = {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}}


def build_deployment(model: CodexModel, base: ModelSource, served_adapter: ServedAdapter,
                     cfg: OperatorConfig, container: Optional[dict[str, Any]] = None,
                     init_containers: Optional[list[dict[str, Any]]] = None,
                     extra_volumes: Optional[list[dict[str, Any]]] = None) -> dict[str, Any]:
    """The serving Deployment; the vLLM runtime passes its own container, init containers and volumes."""
    name = names.server_name(model.metadata.name)
    volumes, _ = server_volumes(base, served_adapter)
    server = dict(container or build_server_container(model, base, served_adapter, cfg))
    server["lifecycle"] = DRAIN
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "containers": [server],
        "securityContext": pod_security_context(),
        "volumes": volumes + list(extra_volumes or []),
    }
    if init_containers:
        pod["initContainers"] = init_containers
    if model.spec.resources.node_selector:
        pod["nodeSelector"] = dict(sorted(model.spec.resources.node_selector.items()))
    if model.spec.resources.tolerations:
        pod["tolerations"] = tolerations(model.spec.resources.tolerations)
    spec: dict[str, Any] = {
        "selector": {"matchLabels": names.model_selector(model.metadata.name)},
        # Zero downtime: a new pod must be Ready before an old one goes.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "revisionHistoryLimit": 3,
        "template": {
            "metadata": {
                "labels": names.model_labels(model.metadata.name),
                "annotations": {names.ANNOTATION_ADAPTER_REVISION: adapter_revision(served_adapter),
                                "kubectl.kubernetes.io/default-container": names.SERVER_CONTAINER},
            },
            "spec": pod,
        },
    }
    if model.spec.autoscaling is None:
        # With an HPA the replica count is the HPA's to set.
        spec["replicas"] = model.spec.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(name, model.metadata.namespace, names.model_labels(model.metadata.name)),
        "spec": spec,
    }
