"""An embedded, real Kubernetes control plane plus a process-kubelet node agent (see README.md)."""

from .cluster import LocalCluster, NodeSpec
from .controlplane import free_port, free_ports

__all__ = ["LocalCluster", "NodeSpec", "free_port", "free_ports"]
