"""Reachability probes for the pod network's tests: a pod that tries a set of ways out, and a listener
on the host's underlay address (a place no pod should reach unasked).

Policies are eventually consistent (the agent programs a new pod's rules as it starts), so a probe
tries until it sees what the test expects, then checks twice more that it holds. A target is
``["tcp", host, port]`` (a connection) or ``["dns", server, 53]`` (a query for kubernetes.default).
"""

from __future__ import annotations

import json
import socket
import threading

IMAGE = "codex-trainer:test"
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


class HostListener:
    """A TCP listener on the host's address on the cluster's underlay (outside the pod range; loopback on
    the loopback network) that records whatever reaches it."""

    def __init__(self, address: str):
        self.server = socket.create_server((address, 0))
        self.address, self.port = self.server.getsockname()[:2]
        self.received: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(0.5)
                try:
                    self.received.append(connection.recv(1 << 16) or b"<connected>")
                except OSError:
                    self.received.append(b"<connected>")


def probe(cluster, namespace: str, name: str, labels: dict, targets: dict, expected: dict,
          image: str = IMAGE) -> dict:
    """Run a probe pod with ``labels``; what it saw of ``targets`` and whether ``expected`` held."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": {
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 1, "automountServiceAccountToken": False,
        "containers": [{"name": "probe", "image": image, "command": ["python", "-c", PROBE], "env": [
            {"name": "TARGETS", "value": json.dumps(targets)}, {"name": "EXPECTED", "value": json.dumps(expected)}]}]}}
    cluster.apply(pod, namespace=namespace)
    cluster.kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", f"pod/{name}", "-n", namespace,
                    "--timeout=90s", check=False)
    return json.loads(cluster.pod_logs(namespace, name))


