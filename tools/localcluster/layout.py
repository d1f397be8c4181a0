"""Where a cluster keeps its files: one module so the agent and the readers agree.

    <workdir>/state.json            ports, pod IP prefix, pids of every daemon
    <workdir>/kubeconfig            admin kubeconfig
    <workdir>/pki/                  CA, certificates, ServiceAccount keys, admin token
    <workdir>/etcd/                 etcd data
    <workdir>/logs/<daemon>.log     etcd, kube-apiserver, ..., agent
    <workdir>/agent/config.json     the node agent's configuration
    <workdir>/agent/mountns.py      the container shim, copied at agent start
    <workdir>/agent/running/        one record per live container process (swept by `down`)
    <workdir>/agent/pv/<pv-name>/   the host directory behind each provisioned PersistentVolume
    <workdir>/agent/pods/<namespace>_<pod>_<uid>/
        meta.json                   namespace, name, uid, container names
        volumes/<volume>/           materialised configMap/secret/projected/emptyDir volumes
        containers/<c>/termination-log
        home/                       $HOME of the pod's processes
        logs/<c>/<restartCount>.log stdout and stderr of each container run
"""

from __future__ import annotations

import json
from pathlib import Path


def pods_root(state_dir: Path) -> Path:
    return state_dir / "pods"


def pod_dir(state_dir: Path, namespace: str, name: str, uid: str) -> Path:
    return pods_root(state_dir) / f"{namespace}_{name}_{uid}"


def container_log(pod_path: Path, container: str, restart_count: int) -> Path:
    return pod_path / "logs" / container / f"{restart_count}.log"


def find_pod_dir(state_dir: Path, namespace: str, name: str) -> Path | None:
    """The newest directory of the pod ``namespace/name`` (a pod may be recreated under a new uid)."""
    candidates = [p for p in pods_root(state_dir).glob(f"{namespace}_{name}_*") if (p / "meta.json").exists()]
    matching = [p for p in candidates if _meta(p).get("name") == name and _meta(p).get("namespace") == namespace]
    return max(matching, key=lambda p: (p / "meta.json").stat().st_mtime, default=None)


def _meta(pod_path: Path) -> dict:
    try:
        return json.loads((pod_path / "meta.json").read_text())
    except (OSError, ValueError):
        return {}


def read_logs(state_dir: Path, namespace: str, name: str, container: str | None = None,
              previous: bool = False) -> str:
    """The output of the current (or previous) run of a container, like ``kubectl logs [-p]``."""
    pod_path = find_pod_dir(state_dir, namespace, name)
    if pod_path is None:
        raise LookupError(f"no logs for pod {namespace}/{name} on this cluster's node agent")
    containers = _meta(pod_path).get("containers", [])
    if container is None:
        if len(containers) != 1:
            raise LookupError(f"pod {namespace}/{name} has containers {containers}: name one")
        container = containers[0]
    runs = sorted((int(p.stem) for p in (pod_path / "logs" / container).glob("*.log")), reverse=True)
    wanted = runs[1:2] if previous else runs[:1]
    if not wanted:
        which = "previous" if previous else "any"
        raise LookupError(f"container {container!r} of pod {namespace}/{name} has no {which} run logged")
    return container_log(pod_path, container, wanted[0]).read_text(errors="replace")
