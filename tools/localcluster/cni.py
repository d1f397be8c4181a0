"""Pod sandboxes through the real CNI plugins, as containerd sets them up.

The node agent is the container runtime here: it makes each pod's network namespace and calls the
plugins of :func:`node_conflist` on it, chained the way the CNI spec says a runtime chains a
network configuration list. On ADD each plugin gets the previous one's result as ``prevResult``;
on DEL they run in reverse order with the cached result. Then ``loopback`` brings up ``lo``, a
network of its own as containerd does it. The plugins run inside the node's network namespace, so
the pods' bridge (``cni0``) is the node's, not the host's.

The result of each ADD is cached under the state directory, as libcni caches it, for the DEL.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .netplan import NetPlan

CNI_VERSION = "1.0.0"
NETWORK_NAME = "codex-pods"
POD_BRIDGE = "cni0"
IFNAME = "eth0"
NETNS_DIR = Path("/run/netns")


class CniError(RuntimeError):
    """A plugin failed: its CNI error (code, msg, details) in the message."""


def node_conflist(plan: NetPlan, pod_cidr: str, ipam_dir: Path) -> dict[str, Any]:
    """The network configuration list of one node's pods: a bridge with host-local addresses from the
    node's podCIDR (the bridge is the pods' gateway), then portmap for hostPort."""
    return {
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "plugins": [
            {"type": "bridge", "bridge": POD_BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": pod_cidr}]], "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": str(ipam_dir)}},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }


LOOPBACK = {"cniVersion": CNI_VERSION, "name": "cni-loopback", "type": "loopback"}


@dataclass
class Cni:
    """Runs the plugins in ``cni_path`` from inside node network namespace ``node_netns``."""

    cni_path: Path
    node_netns: str
    conflist: dict[str, Any]
    cache_dir: Path

    def add(self, container_id: str, netns: str) -> dict[str, Any]:
        """Wire pod sandbox ``netns`` (a name under /run/netns) up; the bridge plugin's result, whose
        ``ips[0].address`` is the pod's IP."""
        result: dict[str, Any] | None = None
        for plugin in self.conflist["plugins"]:
            result = self._call("ADD", self._config(plugin, result), container_id, netns) or result
        self._call("ADD", LOOPBACK, container_id, netns, ifname="lo")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        (self.cache_dir / f"{container_id}.json").write_text(json.dumps(result))
        return result or {}

    def delete(self, container_id: str, netns: str) -> None:
        """Undo :meth:`add` (each plugin in reverse order, with the cached result); safe to repeat, and
        when the namespace is already gone (the plugins release the address and rules all the same)."""
        cached = self.cache_dir / f"{container_id}.json"
        previous = json.loads(cached.read_text()) if cached.exists() else None
        for plugin in reversed(self.conflist["plugins"]):
            self._call("DEL", self._config(plugin, previous), container_id, netns)
        cached.unlink(missing_ok=True)

    def _config(self, plugin: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
        """One plugin's network config within the list: the list's version and name, and the result so far."""
        config = {"cniVersion": self.conflist["cniVersion"], "name": self.conflist["name"], **plugin}
        return config if previous is None else {**config, "prevResult": previous}

    def _call(self, command: str, config: dict[str, Any], container_id: str, netns: str,
              ifname: str = IFNAME) -> dict[str, Any] | None:
        netns_path = NETNS_DIR / netns
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "CNI_COMMAND": command,
               "CNI_CONTAINERID": container_id, "CNI_IFNAME": ifname, "CNI_PATH": str(self.cni_path),
               "CNI_NETNS": str(netns_path) if netns_path.exists() or command == "ADD" else ""}
        binary = self.cni_path / config["type"]
        proc = subprocess.run(["ip", "netns", "exec", self.node_netns, str(binary)], input=json.dumps(config),
                              capture_output=True, text=True, env=env, timeout=60)
        if proc.returncode != 0:
            raise CniError(f"CNI {command} {config['type']} for {container_id}: "
                           f"{(proc.stdout or proc.stderr).strip()}")
        return json.loads(proc.stdout) if proc.stdout.strip() else None


def pod_ip(result: dict[str, Any]) -> str:
    """The pod's address in an ADD result (``10.0.1.5/24`` -> ``10.0.1.5``)."""
    return result["ips"][0]["address"].split("/")[0]
