"""The address plan of one cluster's pod network, and the underlay that carries it.

Every node of the cluster is a network namespace of its own, as a kind node is a container of its
own. Each node namespace has one veth leg on the cluster's underlay bridge on the host. A node's
pods hang off a bridge inside the node's namespace (the CNI ``bridge`` plugin puts it there). Its
kube-proxy and NetworkPolicy rules live in its namespace too, so nothing of the cluster's
touches the host's own firewall, and tearing a node down is deleting its namespace.

Each cluster takes one /16 from the shared address space (100.64.0.0/10, RFC 6598: nobody's LAN),
claimed with a marker file the way :mod:`podnet` claims loopback blocks, so clusters run side by
side. The host holds an ``unreachable`` route for the whole /16: an address of the block that
no bridge or node holds is refused on the host, never sent to its default gateway.

:class:`NetPlan` is pure: from the block's index to every name, address and route. Setting the
network up and tearing it down both read it, so teardown removes exactly what setup made.
"""

from __future__ import annotations

import ipaddress
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

SUPERNET = ipaddress.ip_network("100.64.0.0/10")
BLOCKS = SUPERNET.num_addresses // 2 ** 16  # 64 clusters side by side
MARKERS = Path(tempfile.gettempdir()) / "codex-localcluster-netblocks"
# Node addresses on the underlay start here (the host's is .1).
FIRST_NODE_HOST = 10
MAX_NODES = 200
# Interface names are at most 15 bytes (IFNAMSIZ - 1).
IFNAMSIZ = 15


@dataclass(frozen=True)
class NetPlan:
    """Names and addresses of cluster block ``index`` (0 to 63)."""

    index: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < BLOCKS:
            raise ValueError(f"block index {self.index} outside 0..{BLOCKS - 1}")

    @property
    def block(self) -> ipaddress.IPv4Network:
        return list(SUPERNET.subnets(new_prefix=16))[self.index]

    def _subnet(self, prefix: int, which: int) -> ipaddress.IPv4Network:
        return list(self.block.subnets(new_prefix=prefix))[which]

    @property
    def prefix(self) -> str:
        """What every name the cluster creates starts with: ``cx<index>-``."""
        return f"cx{self.index}-"

    # The underlay: the host's bridge and each node's leg on it.
    @property
    def underlay(self) -> ipaddress.IPv4Network:
        return self._subnet(24, 0)

    @property
    def host_address(self) -> ipaddress.IPv4Address:
        """The host's address on the underlay: where the control plane listens for pods and nodes."""
        return self.underlay.network_address + 1

    @property
    def bridge(self) -> str:
        return self._name("br")

    def node_address(self, node: int) -> ipaddress.IPv4Address:
        self._check_node(node)
        return self.underlay.network_address + FIRST_NODE_HOST + node

    def node_netns(self, node: int) -> str:
        self._check_node(node)
        return f"{self.prefix}node{node}"

    def node_veth(self, node: int) -> str:
        """The host's end of node ``node``'s leg (the node's end is ``eth0`` in its namespace)."""
        self._check_node(node)
        return self._name(f"n{node}")

    # What the control plane hands out.
    @property
    def service_cidr(self) -> ipaddress.IPv4Network:
        return self._subnet(20, 4)  # x.x.64.0/20

    @property
    def apiserver_service_ip(self) -> ipaddress.IPv4Address:
        """kubernetes.default.svc: the first address of the Service range, as the apiserver takes it."""
        return self.service_cidr.network_address + 1

    @property
    def dns_service_ip(self) -> ipaddress.IPv4Address:
        return self.service_cidr.network_address + 10

    @property
    def cluster_cidr(self) -> ipaddress.IPv4Network:
        """The pod range; the controller manager gives each node a /24 of it (node.spec.podCIDR)."""
        return self._subnet(17, 1)  # x.x.128.0/17

    NODE_CIDR_MASK = 24

    def pod_netns(self, pod_uid: str) -> str:
        return f"{self.prefix}pod-{pod_uid}"

    def _name(self, suffix: str) -> str:
        name = self.prefix + suffix
        if len(name) > IFNAMSIZ:
            raise ValueError(f"interface name {name!r} is over {IFNAMSIZ} characters")
        return name

    @staticmethod
    def _check_node(node: int) -> None:
        if not 0 <= node < MAX_NODES:
            raise ValueError(f"node index {node} outside 0..{MAX_NODES - 1}")

    def owns(self, name: str) -> bool:
        """Whether a network namespace or link of that name is this cluster's."""
        return name.startswith(self.prefix)


def claim(owner: str) -> NetPlan:
    """A free block, marked as taken by ``owner`` (the cluster's work dir)."""
    MARKERS.mkdir(parents=True, exist_ok=True)
    candidates = list(range(BLOCKS))
    random.shuffle(candidates)
    for index in candidates:
        try:
            fd = os.open(MARKERS / str(index), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(owner)
        return NetPlan(index)
    raise RuntimeError(f"every pod network block is taken (markers in {MARKERS})")


def release(plan: NetPlan) -> None:
    (MARKERS / str(plan.index)).unlink(missing_ok=True)


LOOPBACK_SERVICE_CIDR = ipaddress.ip_network("10.0.0.0/24")


@dataclass(frozen=True)
class ClusterNetwork:
    """Which network a cluster runs on, and what follows from it: one record that ``up``, the control
    plane's flags, the agent and the tests all read.

    ``real``: the block of :class:`NetPlan` ``index``, pods in network namespaces wired by the CNI
    plugins, kube-proxy and CoreDNS. ``loopback`` (where network namespaces cannot be made): pods in
    the host's namespace, each on an address of the 127.X.0.0/16 ``loopback_block``, no Service
    routing and no DNS.
    """

    mode: str
    index: int | None = None
    loopback_block: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("real", "loopback"):
            raise ValueError(f"network mode {self.mode!r} is neither 'real' nor 'loopback'")
        if (self.mode == "real") != (self.index is not None):
            raise ValueError("the real network needs a block index, and only it")

    @property
    def real(self) -> bool:
        return self.mode == "real"

    @property
    def plan(self) -> NetPlan:
        if self.index is None:
            raise ValueError("the loopback network has no address plan")
        return NetPlan(self.index)

    @property
    def api_host(self) -> str:
        """Where the apiserver listens: the host's underlay address (pods and nodes reach it), or loopback."""
        return str(self.plan.host_address) if self.real else "127.0.0.1"

    @property
    def service_cidr(self) -> str:
        return str(self.plan.service_cidr if self.real else LOOPBACK_SERVICE_CIDR)

    @property
    def apiserver_service_ip(self) -> str:
        return str(ipaddress.ip_network(self.service_cidr).network_address + 1)

    @property
    def dns_ip(self) -> str | None:
        """The cluster DNS Service's address; None without cluster DNS (loopback)."""
        return str(self.plan.dns_service_ip) if self.real else None

    @property
    def cluster_cidr(self) -> str | None:
        return str(self.plan.cluster_cidr) if self.real else None

    def to_dict(self) -> dict:
        return {"mode": self.mode, "index": self.index, "loopback_block": self.loopback_block}
