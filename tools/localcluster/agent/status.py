"""Pod status from the containers' states: phase, conditions and the status patch.

Pure functions: the worker owns the Container objects and calls these to decide
what the apiserver should see.
"""

from __future__ import annotations

from typing import Sequence

from .container import Container
from .kube import now_rfc3339


def phase(init_containers: Sequence[Container], containers: Sequence[Container], initialized: bool) -> str:
    """The kubelet's getPhase, for processes."""
    if any(c.done and not c.succeeded for c in init_containers if not c.sidecar):
        return "Failed"
    if not initialized:
        return "Pending"
    if containers and all(c.done for c in containers):
        if any(c.running for c in init_containers):
            return "Running"  # sidecars are still being stopped
        return "Succeeded" if all(c.succeeded for c in containers) else "Failed"
    if any(c.running or c.restart_count or c.done for c in containers):
        return "Running"
    return "Pending"


def set_condition(conditions: dict[str, dict], kind: str, status: bool, reason: str = "", message: str = "") -> None:
    """Like meta.SetStatusCondition: lastTransitionTime moves only when the status flips."""
    value = "True" if status else "False"
    previous = conditions.get(kind)
    condition = {"type": kind, "status": value,
                 "lastTransitionTime": previous["lastTransitionTime"] if previous and previous["status"] == value
                 else now_rfc3339()}
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    conditions[kind] = condition


def update_conditions(conditions: dict[str, dict], sandbox_ready: bool, pending_init: Sequence[Container],
                      containers: Sequence[Container], pod_phase: str) -> None:
    set_condition(conditions, "PodReadyToStartContainers", sandbox_ready)
    incomplete = " ".join(c.name for c in pending_init)
    set_condition(conditions, "Initialized", not pending_init, "ContainersNotInitialized" if pending_init else "",
                  f"containers with incomplete status: [{incomplete}]" if pending_init else "")
    unready = [c.name for c in containers if not c.ready]
    if pod_phase in ("Succeeded", "Failed"):
        reason, message = "PodCompleted", ""
    else:
        reason = "ContainersNotReady" if unready else ""
        message = f"containers with unready status: [{' '.join(unready)}]" if unready else ""
    set_condition(conditions, "ContainersReady", not unready and pod_phase == "Running", reason, message)
    set_condition(conditions, "Ready", not unready and pod_phase == "Running", reason, message)


def pod_status(pod: dict, pod_ip: str, host_ip: str, start_time: str, pod_phase: str, conditions: dict[str, dict],
               init_containers: Sequence[Container], containers: Sequence[Container],
               message: str = "", reason: str = "") -> dict:
    images = {c["name"]: c.get("image", "") for c in
              pod["spec"].get("containers", []) + (pod["spec"].get("initContainers") or [])}
    scheduled = [c for c in pod.get("status", {}).get("conditions") or [] if c["type"] == "PodScheduled"]
    status = {
        "phase": pod_phase,
        "conditions": scheduled + [conditions[k] for k in sorted(conditions)],
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "startTime": start_time,
        "containerStatuses": [c.status(images[c.name]) for c in containers],
    }
    if pod_ip:
        status["podIP"], status["podIPs"] = pod_ip, [{"ip": pod_ip}]
    if init_containers:
        status["initContainerStatuses"] = [c.status(images[c.name]) for c in init_containers]
    if message:
        status["message"] = message
    if reason:
        status["reason"] = reason
    return status
