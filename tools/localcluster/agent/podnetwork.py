"""Pod sandboxes: the network a pod's containers share, as a container runtime gives it.

:class:`RealNetwork`: every node is a network namespace on the cluster's underlay. Once the
controller manager has given a node its podCIDR, the agent writes that node's CNI config, routes
the CIDR from the host and from every other node (node to node directly on the underlay, as
flannel's host-gw does) and turns on bridge netfilter in the node, so kube-proxy sees pod-to-pod
traffic on the node's bridge. Each pod then gets a network namespace of its own, wired by the
CNI plugins inside its node's namespace; its IP is the one the plugins return, and CNI DEL plus
the namespace's removal take it down. A ``hostNetwork`` pod joins its node's namespace.

:class:`LoopbackNetwork` (no network namespaces here): pods share the host's namespace, each on
an address of the cluster's 127.X.0.0/16.

Both answer :meth:`sandbox` with a :class:`Sandbox` and :meth:`release` it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from .. import cni as cni_module
from ..netplan import ClusterNetwork
from ..podnet import PodIps
from .. import underlay
from ..underlay import NETNS_DIR

log = logging.getLogger(__name__)
T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


class SandboxError(RuntimeError):
    """The pod's sandbox could not be made (FailedCreatePodSandBox)."""


@dataclass(frozen=True)
class Sandbox:
    ip: str
    netns: str | None = None  # a path under /run/netns, or None for the host's namespace (loopback)
    own: bool = True  # the pod's own namespace (False: a hostNetwork pod in its node's)


def _ip(*args: str, netns: str | None = None) -> None:
    _sandboxing(underlay._ip, *args, netns=netns)


def _sandboxing(call: Callable[..., object], *args, **kwargs) -> None:
    """``call`` with a failure of ``ip`` reported as the sandbox's (FailedCreatePodSandBox)."""
    try:
        call(*args, **kwargs)
    except RuntimeError as err:
        raise SandboxError(str(err)) from err


def _enter(netns: str) -> None:
    """Move the calling thread (only it: setns is per thread) into network namespace ``netns``."""
    with open(NETNS_DIR / netns) as handle:
        if _libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {netns}: {os.strerror(errno)}")


def listen_in(netns: str, address: str, port: int) -> socket.socket:
    """A TCP socket listening on ``address:port`` inside network namespace ``netns``. A socket keeps
    the namespace it was made in, so a short thread enters the namespace (setns is per thread),
    makes it, and ends; the agent serves on it from anywhere."""
    made: dict = {}

    def make() -> None:
        try:
            _enter(netns)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(128)
            made["socket"] = sock
        except OSError as err:
            made["error"] = err

    thread = threading.Thread(target=make, name=f"listen-{netns}")
    thread.start()
    thread.join()
    if "error" in made:
        raise made["error"]
    return made["socket"]


class LoopbackNetwork:
    real = False
    dns_ip = None

    def __init__(self, network: ClusterNetwork):
        self.ips = PodIps(network.loopback_block)
        self.lock = threading.Lock()

    def node_address(self, node: str) -> str:
        return "127.0.0.1"

    def node_netns(self, node: str) -> str | None:
        return None

    def from_node(self, node: str, call: Callable[[], T]) -> T:
        return call()

    def setup_node(self, node: str, pod_cidr: str | None) -> None:
        pass

    def adopt(self, pod_ip: str) -> None:
        with self.lock:
            if self.ips.contains(pod_ip):
                self.ips.used.add(pod_ip)

    def sandbox(self, pod: dict) -> Sandbox:
        known = (pod.get("status") or {}).get("podIP")
        with self.lock:
            return Sandbox(known if known and self.ips.contains(known) else self.ips.allocate())

    def release(self, pod_uid: str, node: str, sandbox: Sandbox | None) -> None:
        if sandbox is not None:
            with self.lock:
                self.ips.release(sandbox.ip)

    def clean_stale(self) -> None:
        pass


class RealNetwork:
    real = True

    def __init__(self, network: ClusterNetwork, nodes: list[str], cni_bin: Path, state_dir: Path):
        self.network = network
        self.plan = network.plan
        self.index = {name: i for i, name in enumerate(nodes)}
        self.cni_bin = cni_bin
        self.dir = state_dir / "cni"
        self.cnis: dict[str, cni_module.Cni] = {}
        self.pod_cidrs: dict[str, str] = {}
        self.lock = threading.Lock()
        # Threads that live in each node's namespace: what the node itself sends (probes) goes through them.
        self.node_threads = {name: ThreadPoolExecutor(4, f"node-{name}", _enter, (self.plan.node_netns(i),))
                             for name, i in self.index.items()}

    @property
    def dns_ip(self) -> str | None:
        return self.network.dns_ip

    def node_address(self, node: str) -> str:
        return str(self.plan.node_address(self.index[node]))

    def node_netns(self, node: str) -> str:
        return self.plan.node_netns(self.index[node])

    def from_node(self, node: str, call: Callable[[], T]) -> T:
        """``call()`` run from inside the node's network namespace (its sockets are the node's)."""
        return self.node_threads[node].submit(call).result()

    def setup_node(self, node: str, pod_cidr: str | None) -> None:
        """The node's CNI config and the routes to its pods; kube-proxy needs bridge netfilter on."""
        if not pod_cidr:
            raise SandboxError(f"node {node} has no spec.podCIDR (is the controller manager allocating them?)")
        netns, address = self.node_netns(node), self.node_address(node)
        for key in ("net.bridge.bridge-nf-call-iptables", "net.ipv4.ip_forward"):
            path = "/proc/sys/" + key.replace(".", "/")
            done = subprocess.run(["ip", "netns", "exec", netns, "sh", "-c", f"echo 1 > {path}"],
                                  capture_output=True, text=True)
            if done.returncode != 0:  # no br_netfilter: Services between pods of one node will not answer
                log.warning("node %s: cannot set %s: %s", node, key, done.stderr.strip())
        _sandboxing(underlay.route_pods, self.plan, self.index[node], pod_cidr)
        for other in self.index:
            if other != node:
                _ip("route", "replace", pod_cidr, "via", address, "dev", "eth0", netns=self.node_netns(other))
                if other in self.pod_cidrs:
                    _ip("route", "replace", self.pod_cidrs[other], "via", self.node_address(other), "dev", "eth0",
                        netns=netns)
        conflist = cni_module.node_conflist(self.plan, pod_cidr, self.dir / "ipam" / node)
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.lock:
            self.pod_cidrs[node] = pod_cidr
            self.cnis[node] = cni_module.Cni(self.cni_bin, netns, conflist, self.dir / "cache")

    def adopt(self, pod_ip: str) -> None:
        pass

    def sandbox(self, pod: dict) -> Sandbox:
        node = pod["spec"]["nodeName"]
        if pod["spec"].get("hostNetwork"):
            return Sandbox(self.node_address(node), str(NETNS_DIR / self.node_netns(node)), own=False)
        with self.lock:
            cni = self.cnis.get(node)
        if cni is None:
            raise SandboxError(f"network plugin not ready on node {node}: it has no CNI config yet")
        uid = pod["metadata"]["uid"]
        name = self.plan.pod_netns(uid)
        if not (NETNS_DIR / name).exists():
            _ip("netns", "add", name)
        try:
            result = cni.add(uid, name)
            return Sandbox(cni_module.pod_ip(result), str(NETNS_DIR / name))
        except Exception as err:
            self._remove([node], uid)
            raise SandboxError(f"failed to set up the pod's network with CNI: {err}") from err

    def release(self, pod_uid: str, node: str, sandbox: Sandbox | None) -> None:
        """CNI DEL, then the namespace goes; safe to repeat."""
        if sandbox is None or sandbox.own:
            self._remove([node], pod_uid)

    def _remove(self, nodes, uid: str) -> None:
        """CNI DEL on each of ``nodes`` that has a config, then the pod's namespace goes."""
        name = self.plan.pod_netns(uid)
        for node in nodes:
            cni = self.cnis.get(node)
            try:
                if cni is not None:
                    cni.delete(uid, name)
            except cni_module.CniError as err:
                log.warning("pod %s: CNI DEL failed: %s", uid, err)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)

    def clean_stale(self) -> None:
        """Sandboxes an earlier agent left (its containers died with it): take each down."""
        for path in sorted(NETNS_DIR.glob(self.plan.pod_netns("*"))) if NETNS_DIR.exists() else []:
            self._remove(list(self.cnis), path.name[len(self.plan.pod_netns("")):])
