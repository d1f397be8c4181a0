"""Pod addresses: a block of loopback addresses per cluster, so pods bind unique IPs on one host.

Pods are processes in the host's network namespace. To give each its own IP (two
replicas of a Deployment both listen on :8080), the cluster takes a /16 of 127.0.0.0/8:
every address in it is already the host's own, so nothing is routed and no traffic
leaves loopback. The apiserver refuses loopback addresses in EndpointSlices, so
Services here have no endpoints; :meth:`LocalCluster.service_url` resolves a Service
through its selector to a ready pod instead, which is what kube-proxy would pick.

Clusters started side by side take different blocks: a marker file per block, created
exclusively, says which are in use; ``down`` removes it.
"""

from __future__ import annotations

import ipaddress
import os
import random
import tempfile
from pathlib import Path

MARKERS = Path(tempfile.gettempdir()) / "codex-localcluster-podnets"
FIRST_BLOCK, LAST_BLOCK = 16, 250  # 127.0.x.x stays free for the control plane


def claim_block(owner: str) -> str:
    """A free ``127.X.0.0/16`` block, marked as taken by ``owner`` (the cluster's work dir)."""
    MARKERS.mkdir(parents=True, exist_ok=True)
    candidates = list(range(FIRST_BLOCK, LAST_BLOCK + 1))
    random.shuffle(candidates)
    for octet in candidates:
        marker = MARKERS / str(octet)
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(owner)
        return f"127.{octet}.0.0/16"
    raise RuntimeError(f"every pod address block is taken (markers in {MARKERS})")


def release_block(cidr: str) -> None:
    octet = ipaddress.ip_network(cidr).network_address.packed[1]
    (MARKERS / str(octet)).unlink(missing_ok=True)


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
