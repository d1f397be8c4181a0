"""Register the agent's Nodes and keep them alive: a Lease renewal every 10 s, a status heartbeat every minute.

The node lifecycle controller (kube-controller-manager) treats a Node whose
Lease is not renewed within its grace period as NotReady and taints it, so the
renewals are what keep pods scheduled here.
"""

from __future__ import annotations

import logging
import platform
import threading
from datetime import datetime, timezone

from kubernetes.client.exceptions import ApiException

from .. import versions
from .kube import REQUEST_TIMEOUT, now_rfc3339

log = logging.getLogger(__name__)
LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40
RENEW_EVERY = 10.0
STATUS_EVERY = 60.0


def node_manifest(node: dict) -> dict:
    labels = {
        "kubernetes.io/hostname": node["name"], "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64", **node.get("labels", {}),
    }
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node["name"], "labels": labels}, "spec": {}}


NETWORK_NOT_READY = ("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
                     "message:Network plugin returns error: cni plugin not initialized")


def node_status(node: dict, kubelet_port: int, transitions: dict[str, str], address: str = "127.0.0.1",
                network_ready: bool = True) -> dict:
    """The Node's status as kubelet posts it; not Ready until the node's pod network is (as kubelet
    waits for its CNI config)."""
    stamp = now_rfc3339()
    conditions = []
    ready = (("True", "KubeletReady", "localcluster node agent is posting ready status") if network_ready
             else ("False", "KubeletNotReady", NETWORK_NOT_READY))
    for kind, value, reason, message in (
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("Ready", *ready),
    ):
        if transitions.get(f"{kind}/status") != value:
            transitions[kind], transitions[f"{kind}/status"] = stamp, value
        conditions.append({"type": kind, "status": value, "reason": reason, "message": message,
                           "lastHeartbeatTime": stamp, "lastTransitionTime": transitions[kind]})
    capacity = dict(node["capacity"])
    return {
        "capacity": capacity, "allocatable": capacity, "conditions": conditions,
        "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": node["name"]}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        "nodeInfo": {
            "machineID": "localcluster", "systemUUID": "localcluster", "bootID": "localcluster",
            "kernelVersion": platform.release(), "osImage": "localcluster process node",
            "containerRuntimeVersion": "localcluster://processes", "kubeletVersion": versions.KUBERNETES_VERSION,
            "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
        },
    }


class NodeKeeper:
    def __init__(self, kube, nodes: list[dict], kubelet_port: int, network):
        self.kube = kube
        self.nodes = nodes
        self.kubelet_port = kubelet_port
        self.network = network
        self.network_ready = not network.real
        self.transitions: dict[str, dict[str, str]] = {n["name"]: {} for n in nodes}
        self.uids: dict[str, str] = {}

    def register(self) -> None:
        for node in self.nodes:
            manifest = node_manifest(node)
            try:
                created = self.kube.core.create_node(manifest, _request_timeout=REQUEST_TIMEOUT)
            except ApiException as err:
                if err.status != 409:
                    raise
                created = self.kube.core.patch_node(node["name"], {"metadata": {"labels": manifest["metadata"][
                    "labels"]}}, _request_timeout=REQUEST_TIMEOUT)
            self.uids[node["name"]] = created.metadata.uid
            self._post_status(node)
            self._renew_lease(node["name"])

    def set_up_network(self, stop: threading.Event) -> None:
        """Wait for every Node's podCIDR (the controller manager's node IPAM), set its pod network up,
        then post the Nodes Ready."""
        if self.network_ready:
            return
        for node in self.nodes:
            while not stop.is_set():
                try:
                    cidr = self.kube.core.read_node(node["name"], _request_timeout=REQUEST_TIMEOUT).spec.pod_cidr
                except Exception as err:  # noqa: BLE001 - the apiserver may be busy; ask again
                    log.warning("node %s: reading its podCIDR failed: %s", node["name"], err)
                    cidr = None
                if cidr:
                    self.network.setup_node(node["name"], cidr)
                    log.info("node %s: pod network %s ready", node["name"], cidr)
                    break
                stop.wait(0.2)
        self.network.clean_stale()
        self.network_ready = True
        for node in self.nodes:
            self._post_status(node)

    def _post_status(self, node: dict) -> None:
        status = node_status(node, self.kubelet_port, self.transitions[node["name"]],
                             self.network.node_address(node["name"]), self.network_ready)
        self.kube.core.patch_node_status(node["name"], {"status": status}, _request_timeout=REQUEST_TIMEOUT)

    def _renew_lease(self, name: str) -> None:
        renew = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        try:
            self.kube.coordination.patch_namespaced_lease(name, LEASE_NAMESPACE, {"spec": {
                "holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": renew}},
                _request_timeout=REQUEST_TIMEOUT)
        except ApiException as err:
            if err.status != 404:
                raise
            self.kube.coordination.create_namespaced_lease(LEASE_NAMESPACE, {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": LEASE_NAMESPACE, "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": name, "uid": self.uids[name]}]},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": renew}},
                _request_timeout=REQUEST_TIMEOUT)

    def heartbeat_forever(self, stop: threading.Event) -> None:
        since_status = 0.0
        while not stop.wait(RENEW_EVERY):
            since_status += RENEW_EVERY
            for node in self.nodes:
                try:
                    self._renew_lease(node["name"])
                    if since_status >= STATUS_EVERY:
                        self._post_status(node)
                except Exception as err:  # noqa: BLE001 - the apiserver may be busy; the next beat retries
                    log.warning("node %s: heartbeat failed: %s", node["name"], err)
            if since_status >= STATUS_EVERY:
                since_status = 0.0
