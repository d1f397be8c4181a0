"""NetworkPolicy, enforced by the cluster's policy agent (kube-router's firewall on every node).

One server pod listens on two ports behind a Service. A probe pod tries five ways out: the server
pod on each port, the Service's ClusterIP, the `kubernetes` Service, cluster DNS, and a listener on
the host. Open, everything answers (so a blocked way is the policy's doing, not a missing server);
under a deny-all policy nothing does; an allow rule opens exactly what it names; an ingress rule
on the server refuses the port it leaves out.
(The probe itself is in ``tests/netprobe.py``.)
"""

from __future__ import annotations

import pytest
from netprobe import IMAGE, HostListener, probe

pytestmark = pytest.mark.cluster

SERVER = ("import os, socketserver, threading\n"
          "class H(socketserver.BaseRequestHandler):\n"
          "    def handle(self): self.request.sendall(b'hi')\n"
          "for port in (8080, 9090):\n"
          "    s = socketserver.ThreadingTCPServer(('0.0.0.0', port), H)\n"
          "    threading.Thread(target=s.serve_forever).start()\n")


@pytest.fixture(autouse=True)
def _real_network(cluster):
    if not cluster.network.real:
        pytest.skip("the cluster runs on the loopback network: NetworkPolicy is not enforced there")


def _policy(name: str, selector: dict, types: list[str], **rules) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name},
            "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": types, **rules}}


@pytest.fixture
def target(cluster, cluster_namespace):
    """The server pod, its Service and a host listener, as the probe's targets."""
    server = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "target", "labels": {"app": "target"}},
              "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                  "name": "server", "image": IMAGE, "command": ["python", "-c", SERVER],
                  "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "target"},
               "spec": {"selector": {"app": "target"}, "ports": [{"port": 80, "targetPort": 8080}]}}
    cluster.apply(server, service, namespace=cluster_namespace)
    cluster.kubectl("wait", "--for=condition=Ready", "pod/target", "-n", cluster_namespace, "--timeout=60s")
    pod_ip = cluster.get_json("pod/target", "-n", cluster_namespace)["status"]["podIP"]
    vip = cluster.get_json("service/target", "-n", cluster_namespace)["spec"]["clusterIP"]
    listener = HostListener(cluster.network.api_host)
    network = cluster.network
    targets = {"pod-8080": ["tcp", pod_ip, 8080], "pod-9090": ["tcp", pod_ip, 9090], "service": ["tcp", vip, 80],
               "apiserver": ["tcp", network.apiserver_service_ip, 443], "dns": ["dns", network.dns_ip, 53],
               "host": ["tcp", listener.address, listener.port]}
    yield targets
    listener.server.close()


def test_deny_all_blocks_egress_and_an_allow_rule_opens_exactly_what_it_names(cluster, cluster_namespace, target):
    everything = {name: True for name in target}
    opened = probe(cluster, cluster_namespace, "open", {"role": "locked"}, target, everything)
    assert opened == {"seen": everything, "held": True}

    cluster.apply(_policy("deny-all", {"role": "locked"}, ["Ingress", "Egress"], ingress=[], egress=[]),
                  namespace=cluster_namespace)
    nothing = {name: False for name in target}
    denied = probe(cluster, cluster_namespace, "denied", {"role": "locked"}, target, nothing)
    assert denied == {"seen": nothing, "held": True}
    # A pod the policy does not select is untouched.
    other = probe(cluster, cluster_namespace, "unselected", {"role": "free"}, target, everything)
    assert other == {"seen": everything, "held": True}

    allow = _policy("to-target-8080", {"role": "locked"}, ["Egress"], egress=[
        {"to": [{"podSelector": {"matchLabels": {"app": "target"}}}], "ports": [{"port": 8080, "protocol": "TCP"}]}])
    cluster.apply(allow, namespace=cluster_namespace)
    # The Service's port 80 is the pod's 8080 once translated: open too. Nothing else is.
    named = {**nothing, "pod-8080": True, "service": True}
    allowed = probe(cluster, cluster_namespace, "allowed", {"role": "locked"}, target, named)
    assert allowed == {"seen": named, "held": True}


def test_an_ingress_rule_admits_only_the_ports_it_names(cluster, cluster_namespace, target):
    cluster.apply(_policy("target-ingress", {"app": "target"}, ["Ingress"], ingress=[
        {"ports": [{"port": 8080, "protocol": "TCP"}]}]), namespace=cluster_namespace)
    expected = {name: name != "pod-9090" for name in target}
    seen = probe(cluster, cluster_namespace, "client", {"role": "client"}, target, expected)
    assert seen == {"seen": expected, "held": True}
