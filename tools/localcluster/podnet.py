"""Pod addresses: a block of locally routed addresses per cluster, so pods bind unique IPs on one host.

Pods are processes in the host's network namespace. To give each its own IP
(two replicas of a Deployment both listen on :8080), the cluster claims a /20
from 198.18.0.0/15 (RFC 2544, reserved for benchmarking, so unused on real
networks) as a ``local`` route on ``lo``: the kernel then treats every address
in the block as its own, exactly as it does for 127.0.0.0/8. Loopback
addresses themselves will not do: the apiserver refuses them in EndpointSlices
("may not be in the loopback range"), and Services need EndpointSlices.

``ip route add`` fails when the route exists, so trying blocks in order is
race-free between clusters started side by side. Without CAP_NET_ADMIN the
cluster falls back to a 127.X.0.0/16 block: pods still get unique addresses,
but Services get no endpoints.
"""

from __future__ import annotations

import ipaddress
import random
import shutil
import subprocess

POD_RANGE = ipaddress.ip_network("198.18.0.0/15")
BLOCK_PREFIX = 20


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True)


def claim_block() -> tuple[str, bool]:
    """(CIDR, whether a route was added for it, which ``release_block`` must remove at ``down``)."""
    if shutil.which("ip"):
        for block in POD_RANGE.subnets(new_prefix=BLOCK_PREFIX):
            result = _ip("route", "add", "local", str(block), "dev", "lo", "scope", "host")
            if result.returncode == 0:
                return str(block), True
            if "File exists" not in result.stderr:
                break  # not permitted (or no such device): use the loopback fallback
    return f"127.{random.randint(16, 250)}.0.0/16", False


def release_block(block: str) -> None:
    _ip("route", "del", "local", block, "dev", "lo", "scope", "host")


class PodIps:
    """Hands out the addresses of a block, skipping the network address and reusing released ones."""

    def __init__(self, cidr: str):
        self.network = ipaddress.ip_network(cidr)
        self.used: set[str] = set()
        self._hosts = self.network.hosts()
        self._released: list[str] = []

    def contains(self, address: str) -> bool:
        try:
            return ipaddress.ip_address(address) in self.network
        except ValueError:
            return False

    def allocate(self) -> str:
        """A fresh address while the block lasts, then the longest-released one."""
        for host in self._hosts:
            address = str(host)
            if address not in self.used:
                self.used.add(address)
                return address
        while self._released:
            address = self._released.pop(0)
            if address not in self.used:
                self.used.add(address)
                return address
        raise RuntimeError(f"pod network {self.network} is exhausted")

    def release(self, address: str) -> None:
        if address in self.used:
            self.used.discard(address)
            self._released.append(address)
