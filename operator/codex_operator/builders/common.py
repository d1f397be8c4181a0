"""Pieces several builders share: metadata, the restricted security context, resources."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Optional

from codex_api import paths
from codex_api.common import SecretKeyRef, Toleration

from ..config import Resources

# Pod Security Standards "restricted": what every pod the operator creates runs with.
# A high UID (>= 10000) that matches no host user; the images run as the same one.
RUN_AS_USER = 65532


def metadata(name: str, namespace: str, labels: dict[str, str],
             annotations: Optional[dict[str, str]] = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(sorted(labels.items()))}
    if annotations:
        meta["annotations"] = dict(sorted(annotations.items()))
    return meta


def object_hash(obj: Any) -> str:
    """A stable hash of a JSON-able object (sorted keys), for change detection."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def pod_security_context() -> dict[str, Any]:
    return {
        "fsGroup": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def resource_requirements(cpu: Optional[str], memory: Optional[str], gpus: int, gpu_resource_name: str,
                          default: Resources) -> dict[str, Any]:
    """Requests equal limits (Guaranteed QoS when both are set); GPUs are limits only."""
    requests: dict[str, str] = {}
    cpu = cpu or default.cpu
    memory = memory or default.memory
    if cpu:
        requests["cpu"] = cpu
    if memory:
        requests["memory"] = memory
    limits = dict(requests)
    if gpus > 0:
        limits[gpu_resource_name] = str(gpus)
    out: dict[str, Any] = {}
    if limits:
        out["limits"] = dict(sorted(limits.items()))
    if requests:
        out["requests"] = dict(sorted(requests.items()))
    return out


def tolerations(items: Iterable[Toleration]) -> list[dict[str, Any]]:
    return [t.model_dump(by_alias=True, exclude_none=True) for t in items]


def env_value(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def env_field(name: str, field_path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": field_path}}}


def env_secret(name: str, secret: str, key: str) -> dict[str, Any]:
    """An env var filled by the kubelet from a Secret: the operator never sees the value."""
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def secret_envs(pairs: Iterable[tuple[str, Optional[SecretKeyRef]]]) -> list[dict[str, Any]]:
    """Env vars filled from the Secret keys named; a pair whose reference is unset is left out."""
    return [env_secret(name, ref.name, ref.key) for name, ref in pairs if ref is not None]


def serving_pod_env() -> list[dict[str, Any]]:
    """What every serving container is told: its pod IP (to bind to) and where the Hub cache lives."""
    return [env_field("POD_IP", "status.podIP"), env_value("HF_HOME", str(paths.HF_HOME))]


def sorted_env(env: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Env sorted by name, except that $(VAR) references need their targets first: they come last."""
    items = list(env)
    plain = sorted((e for e in items if "$(" not in str(e.get("value", ""))), key=lambda e: e["name"])
    dependent = sorted((e for e in items if "$(" in str(e.get("value", ""))), key=lambda e: e["name"])
    return plain + dependent


def volume_name(prefix: str, name: str) -> str:
    """A DNS-1123 label naming a volume after an object whose name may be long or dotted."""
    candidate = f"{prefix}-{name}".replace(".", "-")
    if len(candidate) <= 63:
        return candidate
    return f"{prefix}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"
