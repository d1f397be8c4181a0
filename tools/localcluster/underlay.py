"""The cluster's underlay on the host, from its :class:`~localcluster.netplan.NetPlan`: the bridge,
one network namespace per node with its leg on the bridge, and the host's routes into the block.

``up`` is safe to repeat (what exists is kept); ``down`` removes everything whose name starts
with the plan's prefix, and the routes, whatever ``up`` got to; :func:`leftovers` lists what is
still there (a test asserts it is nothing). Needs root and iproute2.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
from pathlib import Path

from .netplan import NetPlan

NETNS_DIR = Path("/run/netns")


class NetworkUnavailable(RuntimeError):
    """The host cannot give the cluster real pod networking (not root, no iproute2, no netns)."""


def _ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    command = ["ip", *(["-n", netns] if netns else []), *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip()}")
    return result


def unavailable_reason() -> str | None:
    """Why real pod networking cannot be set up here, or None when it can."""
    if os.geteuid() != 0:
        return "the node agent is not root, so it cannot create network namespaces"
    if shutil.which("ip") is None:
        return "iproute2's ip command is not installed (apt-get install iproute2)"
    probe = "cxprobe-" + str(os.getpid())
    result = _ip("netns", "add", probe, check=False)
    if result.returncode != 0:
        return f"ip netns add failed: {result.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _exists(kind: str, name: str) -> bool:
    if kind == "netns":
        return (NETNS_DIR / name).exists()
    return _ip("link", "show", name, check=False).returncode == 0


def _sysctl(netns: str, key: str, value: str) -> None:
    """Set a per-namespace sysctl inside ``netns`` (its /proc/sys/net is its own)."""
    path = "/proc/sys/" + key.replace(".", "/")
    subprocess.run(["ip", "netns", "exec", netns, "sh", "-c", f"echo {value} > {path}"], check=True,
                   capture_output=True)


def up(plan: NetPlan, nodes: int) -> None:
    """The bridge with the host's address, the block's unreachable route, and ``nodes`` node namespaces,
    each with ``eth0`` on the bridge, a default route to the host and IP forwarding on."""
    if not _exists("link", plan.bridge):
        _ip("link", "add", plan.bridge, "type", "bridge")
        _ip("addr", "add", f"{plan.host_address}/{plan.underlay.prefixlen}", "dev", plan.bridge)
    _ip("link", "set", plan.bridge, "up")
    _ip("route", "replace", "unreachable", str(plan.block), "metric", "4000")
    for node in range(nodes):
        netns, veth = plan.node_netns(node), plan.node_veth(node)
        if not _exists("netns", netns):
            _ip("netns", "add", netns)
        if not _exists("link", veth):
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
            _ip("addr", "add", f"{plan.node_address(node)}/{plan.underlay.prefixlen}", "dev", "eth0", netns=netns)
        _ip("link", "set", veth, "master", plan.bridge, "up")
        _ip("link", "set", "lo", "up", netns=netns)
        _ip("link", "set", "eth0", "up", netns=netns)
        _ip("route", "replace", "default", "via", str(plan.host_address), netns=netns)
        _sysctl(netns, "net.ipv4.ip_forward", "1")


def route_pods(plan: NetPlan, node: int, pod_cidr: str) -> None:
    """The host's route to a node's pods (node.spec.podCIDR), through the node's leg."""
    _ip("route", "replace", pod_cidr, "via", str(plan.node_address(node)), "dev", plan.bridge)


def route_services(plan: NetPlan, service_cidr) -> None:
    """The host's route to the Service range, through node 0: its kube-proxy translates what the host sends
    to a ClusterIP (and masquerades it, so the replies come back the same way)."""
    _ip("route", "replace", str(service_cidr), "via", str(plan.node_address(0)), "dev", plan.bridge)


def down(plan: NetPlan) -> None:
    """Remove every namespace and link of the plan, and its routes (which go with the bridge, but for
    the unreachable one). Safe to repeat, and on a half-made underlay."""
    for netns in _namespaces(plan):
        _ip("netns", "del", netns, check=False)
    for link in _links(plan):
        _ip("link", "del", link, check=False)
    _ip("route", "del", "unreachable", str(plan.block), check=False)


def _namespaces(plan: NetPlan) -> list[str]:
    return sorted(p.name for p in NETNS_DIR.glob(plan.prefix + "*")) if NETNS_DIR.exists() else []


def _links(plan: NetPlan) -> list[str]:
    shown = json.loads(_ip("-j", "link", "show").stdout or "[]")
    return [link["ifname"] for link in shown if plan.owns(link["ifname"])]


def leftovers(plan: NetPlan) -> list[str]:
    """What of the plan's still exists on the host: namespaces, links, routes into the block."""
    found = [f"netns {name}" for name in _namespaces(plan)]
    found += [f"link {name}" for name in _links(plan)]
    routes = json.loads(_ip("-j", "route", "show").stdout or "[]")
    block = plan.block
    for route in routes:
        dst = route.get("dst", "")
        if dst not in ("default", "") and _inside(dst, block):
            found.append(f"route {route.get('type', '')} {dst}".replace("  ", " "))
    return found


def _inside(dst: str, block: ipaddress.IPv4Network) -> bool:
    try:
        return ipaddress.ip_network(dst, strict=False).subnet_of(block)
    except (ValueError, TypeError):
        return False
