"""The real pod network, as pods and clients see it: CNI addresses, cluster DNS, the `kubernetes`
Service, ClusterIP load balancing over ready endpoints only, and a headless Service's per-pod names."""

from __future__ import annotations

import collections
import ipaddress
import json
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.cluster

IMAGE = "codex-trainer:test"
# A server that answers every GET with its pod's name, on the pod's IP.
NAME_SERVER = ("import http.server, os\n"
               "class H(http.server.BaseHTTPRequestHandler):\n"
               "    def do_GET(self):\n"
               "        body = os.environ['HOSTNAME'].encode()\n"
               "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
               "        self.end_headers(); self.wfile.write(body)\n"
               "    def log_message(self, *args): pass\n"
               "http.server.ThreadingHTTPServer((os.environ['POD_IP'], 8080), H).serve_forever()\n")
POD_IP_ENV = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}


@pytest.fixture(autouse=True)
def _real_network(cluster):
    if not cluster.network.real:
        pytest.skip("the cluster runs on the loopback network")


def _pod(name: str, script: str, labels: dict | None = None, container: dict | None = None, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1, **spec, "containers": [
                {"name": "main", "image": IMAGE, "command": ["python", "-c", script], "env": [POD_IP_ENV],
                 **(container or {})}]}}


def _finished(cluster, namespace: str, name: str) -> dict:
    cluster.kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", f"pod/{name}", "-n", namespace,
                    "--timeout=90s", check=False)
    pod = cluster.get_json(f"pod/{name}", "-n", namespace)
    assert pod["status"]["phase"] == "Succeeded", (pod["status"], cluster.pod_logs(namespace, name))
    return pod


def test_a_pod_resolves_the_apiserver_and_reaches_it_through_its_service(cluster, cluster_namespace):
    """How the operator runs in-cluster: kubernetes.default.svc through CoreDNS, the Service VIP through
    kube-proxy, the ServiceAccount token and CA the pod is given."""
    script = """
import json, os, socket, ssl, urllib.request
sa = '/var/run/secrets/kubernetes.io/serviceaccount'
review = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).encode()
request = urllib.request.Request('https://kubernetes.default.svc/apis/authentication.k8s.io/v1/selfsubjectreviews',
    data=review, headers={'Authorization': 'Bearer ' + open(sa + '/token').read(),
                          'Content-Type': 'application/json'})
answer = json.load(urllib.request.urlopen(request, context=ssl.create_default_context(cafile=sa + '/ca.crt')))
print(json.dumps({'resolved': socket.gethostbyname('kubernetes.default.svc'),
                  'env': os.environ['KUBERNETES_SERVICE_HOST'] + ':' + os.environ['KUBERNETES_SERVICE_PORT'],
                  'user': answer['status']['userInfo']['username'],
                  'resolv': open('/etc/resolv.conf').read(), 'hosts': open('/etc/hosts').read()}))
"""
    cluster.apply(_pod("whoami", script), namespace=cluster_namespace)
    pod = _finished(cluster, cluster_namespace, "whoami")
    report = json.loads(cluster.pod_logs(cluster_namespace, "whoami"))
    vip = cluster.network.apiserver_service_ip
    assert report["resolved"] == vip and report["env"] == f"{vip}:443"
    assert report["user"] == f"system:serviceaccount:{cluster_namespace}:default"
    assert report["resolv"] == (f"nameserver {cluster.network.dns_ip}\nsearch {cluster_namespace}.svc.cluster.local "
                                "svc.cluster.local cluster.local\noptions ndots:5\n")
    ip = pod["status"]["podIP"]
    assert f"{ip}\twhoami\n" in report["hosts"]
    node = cluster.get_json(f"node/{pod['spec']['nodeName']}")
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(node["spec"]["podCIDR"])
    internal = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
    index = [n.name for n in cluster.nodes].index(node["metadata"]["name"])
    assert pod["status"]["hostIP"] == internal == str(cluster.network.plan.node_address(index))


def test_a_service_spreads_requests_over_its_ready_endpoints_only(cluster, cluster_namespace):
    ready = {"readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "names"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "names", "tier": "ready"}},
                 "template": {"metadata": {"labels": {"app": "names", "tier": "ready"}},
                              "spec": _pod("x", NAME_SERVER, container=ready)["spec"] | {"restartPolicy": "Always"}}}}
    # Selected by the Service, never ready: it must get no request.
    unready = _pod("never-ready", NAME_SERVER, labels={"app": "names"},
                   container={"readinessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1}})
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "names"},
               "spec": {"selector": {"app": "names"}, "ports": [{"port": 80, "targetPort": 8080}]}}
    cluster.apply(deployment, unready, service, namespace=cluster_namespace)
    cluster.kubectl("wait", "--for=condition=Available", "deployment/names", "-n", cluster_namespace, "--timeout=90s")
    replicas = {p["metadata"]["name"] for p in cluster.get_json(
        "pods", "-n", cluster_namespace, "-l", "tier=ready")["items"]}
    assert len(replicas) == 2
    cluster.wait_for("the unready pod running", lambda: cluster.get_json(
        "pod/never-ready", "-n", cluster_namespace)["status"].get("phase") == "Running")

    url = cluster.service_address(cluster_namespace, "names", 80)
    cluster.wait_for("both replicas behind the ClusterIP", lambda: len({_get(url) for _ in range(20)} - {None}) == 2)
    from_host = collections.Counter(_get(url) for _ in range(40))
    # And from a pod, by the Service's DNS name.
    client = _pod("client", "import collections, json, urllib.request\n"
                  "print(json.dumps(collections.Counter(urllib.request.urlopen('http://names', timeout=5).read()"
                  ".decode() for _ in range(40))))")
    cluster.apply(client, namespace=cluster_namespace)
    _finished(cluster, cluster_namespace, "client")
    from_pod = collections.Counter(json.loads(cluster.pod_logs(cluster_namespace, "client")))
    for counts in (from_host, from_pod):
        assert set(counts) == replicas, counts
        assert min(counts.values()) >= 5, counts  # spread, not pinned to one replica


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()
    except urllib.error.URLError:
        return None


def test_a_headless_service_names_each_pod(cluster, cluster_namespace):
    """What an Indexed Job's pods meet by: <hostname>.<subdomain>.<namespace>.svc, and the Service's own name."""
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "workers"},
               "spec": {"clusterIP": "None", "selector": {"app": "workers"}, "ports": [{"port": 29500}]}}
    pods = [_pod(f"worker-{i}", "import time; time.sleep(120)", hostname=f"worker-{i}", subdomain="workers",
                 labels={"app": "workers"}) for i in range(2)]
    cluster.apply(service, *pods, namespace=cluster_namespace)
    for i in range(2):
        cluster.kubectl("wait", "--for=condition=Ready", f"pod/worker-{i}", "-n", cluster_namespace, "--timeout=60s")
    ips = {cluster.get_json(f"pod/worker-{i}", "-n", cluster_namespace)["status"]["podIP"] for i in range(2)}
    script = ("import json, socket, time\n"
              f"names = ['worker-0.workers.{cluster_namespace}.svc', 'worker-1.workers', 'workers']\n"
              "for _ in range(60):\n"
              "    try:\n"
              "        found = {n: sorted({a[4][0] for a in socket.getaddrinfo(n, 29500, socket.AF_INET)}) for n in names}\n"
              "        if len(found['workers']) == 2: break\n"
              "    except OSError as err:\n"
              "        found = str(err)\n"
              "    time.sleep(0.5)\n"
              "print(json.dumps(found))\n")
    cluster.apply(_pod("resolver", script), namespace=cluster_namespace)
    _finished(cluster, cluster_namespace, "resolver")
    found = json.loads(cluster.pod_logs(cluster_namespace, "resolver"))
    by_name = {cluster.get_json(f"pod/worker-{i}", "-n", cluster_namespace)["status"]["podIP"]: i for i in range(2)}
    assert by_name[found[f"worker-0.workers.{cluster_namespace}.svc"][0]] == 0
    assert by_name[found["worker-1.workers"][0]] == 1
    assert set(found["workers"]) == ips
