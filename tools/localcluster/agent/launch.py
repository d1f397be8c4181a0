"""What the shim needs to start one container: argv, env, mounts, user and working directory.

Built fresh for every start, so a restarted container sees Secrets and
ConfigMaps as they are now (and a missing one is a CreateContainerConfigError).
"""

from __future__ import annotations

import ast
import os
import re
import sys
import sysconfig
from pathlib import Path

from .config import AgentConfig, entrypoint
from .dnsfiles import pod_hostname
from .env import ConfigError, EnvResolver, expand
from .volumes import PodVolumes

NONROOT_UID = 65532  # the user our images run as when a pod asks for runAsNonRoot without runAsUser


def identity(pod_spec: dict, container: dict) -> tuple[int, int, list[int]]:
    """(uid, gid, supplementary groups) from the pod and container securityContexts."""
    pod_security = pod_spec.get("securityContext") or {}
    own = {k: v for k, v in (container.get("securityContext") or {}).items() if v is not None}
    security = {**pod_security, **own}
    non_root = bool(security.get("runAsNonRoot"))
    uid = security.get("runAsUser")
    if uid is None:
        uid = NONROOT_UID if non_root else 0
    gid = security.get("runAsGroup")
    if gid is None:
        gid = NONROOT_UID if uid == NONROOT_UID and security.get("runAsUser") is None else 0
    if non_root and uid == 0:
        raise ConfigError("container has runAsNonRoot and image will run as root")
    groups = set(pod_security.get("supplementalGroups") or [])
    if pod_security.get("fsGroup") is not None:
        groups.add(int(pod_security["fsGroup"]))
    return int(uid), int(gid), sorted(groups)


def base_env(config: AgentConfig, hostname: str, home: Path, container: dict, gpus: list[int]) -> dict[str, str]:
    """What every container starts with before its own env: PATH, HOME, the in-cluster API address, GPUs."""
    # As kubelet: the `kubernetes` Service's ClusterIP and port (kube-proxy forwards it to the apiserver).
    # Loopback mode has no kube-proxy: pods there reach the apiserver on 127.0.0.1 directly.
    host, port = ((config.network.apiserver_service_ip, "443") if config.network.real
                  else ("127.0.0.1", str(config.apiserver_port)))
    env = {
        "PATH": config.container_path(container.get("image", "")), "HOSTNAME": hostname, "HOME": str(home),
        "KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port,
        "KUBERNETES_SERVICE_PORT_HTTPS": port, "KUBERNETES_PORT": f"tcp://{host}:{port}",
        "KUBERNETES_PORT_443_TCP": f"tcp://{host}:{port}", "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
        "KUBERNETES_PORT_443_TCP_ADDR": host, "KUBERNETES_PORT_443_TCP_PORT": port,
        **config.host_env,
    }
    # Like the NVIDIA device plugin: a container sees exactly the GPUs it was allocated, others none.
    wanted = int(((container.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu", 0) or 0)
    visible = ",".join(str(i) for i in gpus[:wanted])
    env["CUDA_VISIBLE_DEVICES"] = visible
    env["NVIDIA_VISIBLE_DEVICES"] = visible or "void"
    return env


def build(kube, config: AgentConfig, pod_view: dict, container: dict, volumes: PodVolumes,
          termination_log: Path, home: Path, gpus: list[int], allocatable: dict) -> dict:
    uid, gid, groups = identity(pod_view["spec"], container)
    home.mkdir(parents=True, exist_ok=True)
    if uid != 0:
        os.chown(home, uid, gid)
    hostname = pod_hostname(pod_view)
    env = EnvResolver(kube, pod_view, allocatable).resolve(
        container, base_env(config, hostname, home, container, gpus))
    command = container.get("command") or entrypoint(container.get("image", ""), config)
    argv = [expand(part, env.get) for part in [*command, *(container.get("args") or [])]]
    if not argv:
        raise ConfigError(f"no command specified, and image {container.get('image')} has no entrypoint "
                          "in the local node's table")
    mounts = volumes.mounts(container, env, termination_log)
    return {
        "argv": argv, "env": env, "uid": uid, "gid": gid, "groups": groups,
        "cwd": container.get("workingDir") or str(home), "hostname": hostname,
        "mounts": [m.__dict__ for m in mounts],
        "runtime_paths": sorted({*runtime_paths(config), str(home)}),
        "home": str(home),
        "read_only_root": bool((container.get("securityContext") or {}).get("readOnlyRootFilesystem")),
    }


def runtime_paths(config: AgentConfig) -> list[str]:
    """Directories every container needs whatever it mounts: the Python, the venv, editable sources."""
    paths = {os.path.realpath(sys.base_prefix), str(config.bin_dir.parent),
             *(str(Path(d).parent) for d in config.image_bin_dirs.values())}
    for finder in Path(sysconfig.get_paths()["purelib"]).glob("__editable___*_finder.py"):
        # setuptools' editable finder maps each package to its source directory.
        mapping = re.search(r"^MAPPING\s*(?::[^=]*)?=\s*(\{.*?\})\s*$", finder.read_text(), re.M | re.S)
        if mapping:
            paths.update(str(Path(p).parent) for p in ast.literal_eval(mapping.group(1)).values())
    return sorted(paths)
