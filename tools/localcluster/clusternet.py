"""The cluster's network services on the real network: kube-proxy on every node, CoreDNS in the cluster.

kube-proxy runs as kubeadm runs it, one per node, but as a daemon of the cluster rather than a
DaemonSet pod: it lives in the node's network namespace (``ip netns exec``), so its nftables
tables are the node's and the host's firewall is never touched. It runs in nftables mode, or in
iptables mode where ``nft`` is missing (:func:`proxy_mode`).

NetworkPolicy is enforced by kube-router's firewall alone (``--run-firewall``; its BGP router and
IPVS proxy stay off: the CNI bridge and kube-proxy do those jobs), one per node in the node's
namespace, with iptables and ipsets there. sigs.k8s.io/kube-network-policies would be the first
choice, but it needs nftables' ``queue`` expression, which this kernel refuses (versions.py).

CoreDNS runs as kubeadm deploys it: a Deployment in kube-system behind the ``kube-dns`` Service
at the plan's DNS address, with the ``kubernetes`` plugin serving ``cluster.local`` and the
reverse zones. It has no ``forward`` plugin: a cluster here must never send a query to a server
outside it, so names outside ``cluster.local`` are refused.

Everything here is pure (manifests, configs, argv), but :func:`dns_query`, a stdlib DNS client
for readiness checks and tests.
"""

from __future__ import annotations

import ipaddress
import random
import shutil
import socket
import struct
from pathlib import Path

from . import versions
from .netplan import ClusterNetwork

COREDNS_IMAGE_REPOSITORY = "registry.k8s.io/coredns/coredns"
CLUSTER_DOMAIN = "cluster.local"
DNS_LABELS = {"k8s-app": "kube-dns"}
COREFILE = """\
.:53 {
    errors
    health {
        lameduck 5s
    }
    ready
    kubernetes %(domain)s in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    cache 30
    reload
    loadbalance
}
"""


def proxy_mode() -> str:
    """nftables where the ``nft`` command is installed, else iptables (the issue's order)."""
    return "nftables" if shutil.which("nft") else "iptables"


def kube_proxy_config(network: ClusterNetwork, node_name: str, kubeconfig: Path, mode: str) -> dict:
    """A KubeProxyConfiguration for one node. conntrack limits and timeouts are left as they are
    (zero): they are the host's, not the node's, and a namespace may not set them."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": mode, "hostnameOverride": node_name, "clusterCIDR": network.cluster_cidr,
        # Inside the node's namespace: these ports are the node's own.
        "bindAddress": "0.0.0.0", "healthzBindAddress": "127.0.0.1:10256", "metricsBindAddress": "127.0.0.1:10249",
        # Traffic to a Service from outside the pod range (the host, a node) is masqueraded, so its
        # replies come back through the node that translated it.
        "detectLocalMode": "ClusterCIDR",
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s",
                      "udpTimeout": "0s", "udpStreamTimeout": "0s"},
        "nodePortAddresses": ["primary"],
    }


def kube_proxy_argv(binary: Path, node_netns: str, config: Path) -> list[str]:
    return ["ip", "netns", "exec", node_netns, str(binary), f"--config={config}", "--v=1"]


def kube_router_argv(binary: Path, node_netns: str, kubeconfig: Path, node_name: str,
                     network: ClusterNetwork) -> list[str]:
    """kube-router as a NetworkPolicy controller only, for one node, inside the node's namespace."""
    return ["ip", "netns", "exec", node_netns, str(binary), f"--kubeconfig={kubeconfig}",
            f"--hostname-override={node_name}", "--run-firewall=true", "--run-router=false",
            "--run-service-proxy=false", "--run-loadbalancer=false", "--enable-cni=false",
            f"--service-cluster-ip-range={network.service_cidr}", "--health-port=20244", "--metrics-port=0",
            "--iptables-sync-period=1m", "--v=1"]


def coredns_image() -> str:
    return f"{COREDNS_IMAGE_REPOSITORY}:{versions.COREDNS_VERSION}"


def coredns_manifests(network: ClusterNetwork, replicas: int = 1) -> list[dict]:
    """CoreDNS as kubeadm deploys it: RBAC, the Corefile, the Deployment and the kube-dns Service."""
    meta = lambda name, **extra: {"name": name, "namespace": "kube-system", **extra}  # noqa: E731
    rules = [
        {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
    ]
    container = {
        "name": "coredns", "image": coredns_image(), "args": ["-conf", "/etc/coredns/Corefile"],
        "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                  {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": 9153, "protocol": "TCP"}],
        "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": True}],
        "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "initialDelaySeconds": 10,
                          "periodSeconds": 10, "failureThreshold": 5},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 1},
        "resources": {"requests": {"cpu": "100m", "memory": "70Mi"}, "limits": {"memory": "170Mi"}},
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("coredns")},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "system:coredns"}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "system:coredns"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
         "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("coredns"),
         "data": {"Corefile": COREFILE % {"domain": CLUSTER_DOMAIN}}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("coredns", labels=dict(DNS_LABELS)),
         "spec": {"replicas": replicas, "selector": {"matchLabels": dict(DNS_LABELS)},
                  "template": {"metadata": {"labels": dict(DNS_LABELS)}, "spec": {
                      "serviceAccountName": "coredns", "dnsPolicy": "Default", "priorityClassName":
                      "system-cluster-critical", "containers": [container],
                      "volumes": [{"name": "config-volume", "configMap": {"name": "coredns", "items": [
                          {"key": "Corefile", "path": "Corefile"}]}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta("kube-dns", labels={
            **DNS_LABELS, "kubernetes.io/name": "CoreDNS"}),
         "spec": {"selector": dict(DNS_LABELS), "clusterIP": network.dns_ip, "ports": [
             {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
             {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
             {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]}},
    ]


class DnsError(RuntimeError):
    """No answer, or an error answer (NXDOMAIN, REFUSED, ...)."""


RCODES = {1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def dns_query(server: str, name: str, timeout: float = 2.0) -> list[str]:
    """The A records of ``name`` from ``server`` (one UDP query, RFC 1035), for readiness and tests."""
    ident = random.randrange(1 << 16)
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split(".")) + b"\0"
    query = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(query, (server, 53))
        reply = sock.recv(4096)
    answer_id, flags, _, count = struct.unpack("!HHHH", reply[:8])
    if answer_id != ident:
        raise DnsError(f"{name}: reply to another query")
    if flags & 0xF:
        raise DnsError(f"{name}: {RCODES.get(flags & 0xF, flags & 0xF)}")
    offset = 12 + len(question) + 4
    addresses = []
    for _ in range(count):
        offset = _skip_name(reply, offset)
        kind, _, _, length = struct.unpack("!HHIH", reply[offset:offset + 10])
        offset += 10
        if kind == 1 and length == 4:
            addresses.append(str(ipaddress.IPv4Address(reply[offset:offset + 4])))
        offset += length
    return addresses


def _skip_name(message: bytes, offset: int) -> int:
    while True:
        length = message[offset]
        if length >= 0xC0:  # a compression pointer ends the name
            return offset + 2
        if length == 0:
            return offset + 1
        offset += 1 + length
