"""NetworkPolicy, enforced by the cluster's policy agent (kube-router's firewall on every node).

One server pod listens on two ports behind a Service. A probe pod tries five ways out: the server
pod on each port, the Service's ClusterIP, the `kubernetes` Service, cluster DNS, and a listener on
the host. Open, everything answers (so a blocked way is the policy's doing, not a missing server);
under a deny-all policy nothing does; an allow rule opens exactly what it names; an ingress rule
on the server refuses the port it leaves out.

Policies are eventually consistent (the agent programs a new pod's rules as it starts), so a probe
tries until it sees what the test expects, then checks that it holds.
"""

from __future__ import annotations

import json
import socket
import threading

import pytest

pytestmark = pytest.mark.cluster

IMAGE = "codex-trainer:test"
SERVER = ("import os, socketserver, threading\n"
          "class H(socketserver.BaseRequestHandler):\n"
          "    def handle(self): self.request.sendall(b'hi')\n"
          "for port in (8080, 9090):\n"
          "    s = socketserver.ThreadingTCPServer(('0.0.0.0', port), H)\n"
          "    threading.Thread(target=s.serve_forever).start()\n")
PROBE = """
import json, os, random, socket, struct, time
targets = json.loads(os.environ['TARGETS'])
expected = json.loads(os.environ['EXPECTED'])

def reach(kind, host, port):
    try:
        if kind == 'dns':
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(1.5)
                q = struct.pack('!HHHHHH', random.randrange(65536), 0x0100, 1, 0, 0, 0)
                q += b''.join(bytes([len(p)]) + p.encode() for p in 'kubernetes.default.svc.cluster.local'.split('.'))
                s.sendto(q + b'\\0' + struct.pack('!HH', 1, 1), (host, port))
                s.recv(512)
        else:
            socket.create_connection((host, port), 1.5).close()
        return True
    except OSError:
        return False

deadline = time.monotonic() + 30
while True:
    seen = {name: reach(*target) for name, target in targets.items()}
    if seen == expected or time.monotonic() > deadline:
        break
    time.sleep(0.5)
held = seen == expected and all({n: reach(*t) for n, t in targets.items()} == expected for _ in range(2))
print(json.dumps({'seen': seen, 'held': held}))
"""


@pytest.fixture(autouse=True)
def _real_network(cluster):
    if not cluster.network.real:
        pytest.skip("the cluster runs on the loopback network: NetworkPolicy is not enforced there")


class HostListener:
    """A TCP listener on the host's address on the cluster's underlay (outside the pod range)."""

    def __init__(self, address: str):
        self.server = socket.create_server((address, 0))
        self.address, self.port = self.server.getsockname()[:2]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            connection.close()


def _policy(name: str, selector: dict, types: list[str], **rules) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name},
            "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": types, **rules}}


def _probe(cluster, namespace: str, name: str, labels: dict, targets: dict, expected: dict) -> dict:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": {
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 1, "automountServiceAccountToken": False,
        "containers": [{"name": "probe", "image": IMAGE, "command": ["python", "-c", PROBE], "env": [
            {"name": "TARGETS", "value": json.dumps(targets)}, {"name": "EXPECTED", "value": json.dumps(expected)}]}]}}
    cluster.apply(pod, namespace=namespace)
    cluster.kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", f"pod/{name}", "-n", namespace,
                    "--timeout=90s", check=False)
    return json.loads(cluster.pod_logs(namespace, name))


@pytest.fixture
def target(cluster, cluster_namespace):
    """The server pod, its Service and a host listener: (targets as the probe takes them, listener)."""
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
    opened = _probe(cluster, cluster_namespace, "open", {"role": "locked"}, target, everything)
    assert opened == {"seen": everything, "held": True}

    cluster.apply(_policy("deny-all", {"role": "locked"}, ["Ingress", "Egress"], ingress=[], egress=[]),
                  namespace=cluster_namespace)
    nothing = {name: False for name in target}
    denied = _probe(cluster, cluster_namespace, "denied", {"role": "locked"}, target, nothing)
    assert denied == {"seen": nothing, "held": True}
    # A pod the policy does not select is untouched.
    other = _probe(cluster, cluster_namespace, "unselected", {"role": "free"}, target, everything)
    assert other == {"seen": everything, "held": True}

    allow = _policy("to-target-8080", {"role": "locked"}, ["Egress"], egress=[
        {"to": [{"podSelector": {"matchLabels": {"app": "target"}}}], "ports": [{"port": 8080, "protocol": "TCP"}]}])
    cluster.apply(allow, namespace=cluster_namespace)
    # The Service's port 80 is the pod's 8080 once translated: open too. Nothing else is.
    named = {**nothing, "pod-8080": True, "service": True}
    allowed = _probe(cluster, cluster_namespace, "allowed", {"role": "locked"}, target, named)
    assert allowed == {"seen": named, "held": True}


def test_an_ingress_rule_admits_only_the_ports_it_names(cluster, cluster_namespace, target):
    cluster.apply(_policy("target-ingress", {"app": "target"}, ["Ingress"], ingress=[
        {"ports": [{"port": 8080, "protocol": "TCP"}]}]), namespace=cluster_namespace)
    expected = {name: name != "pod-9090" for name in target}
    seen = _probe(cluster, cluster_namespace, "client", {"role": "client"}, target, expected)
    assert seen == {"seen": expected, "held": True}
