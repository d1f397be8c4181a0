"""An embedded, real Kubernetes control plane plus a process-kubelet node agent (see README.md)."""

from .cluster import LocalCluster, NodeSpec

__all__ = ["LocalCluster", "NodeSpec"]
