"""Admission and authorization are real: PodSecurity rejects, RBAC denies until a Role is bound."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.cluster

RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}


def _pod(name: str, script: str, security: dict | None = None, pod_security: dict | None = None,
         image: str = "codex-trainer:test", **spec) -> dict:
    container = {"name": "main", "image": image, "command": ["python", "-c", script]}
    if security is not None:
        container["securityContext"] = security
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "containers": [container], **spec,
                     **({"securityContext": pod_security} if pod_security else {})}}


def _terminated(cluster, namespace: str, name: str, timeout: float = 60) -> dict:
    def check():
        statuses = cluster.get_json(f"pod/{name}", "-n", namespace)["status"].get("containerStatuses") or []
        return statuses and statuses[0]["state"].get("terminated")
    return cluster.wait_for(f"pod {namespace}/{name} to terminate", check, timeout)


def test_pod_security_restricted_rejects_then_admits(cluster):
    with cluster.temporary_namespace("restricted", labels=RESTRICTED) as namespace:
        refused = cluster.apply(_pod("careless", "print('hi')"), namespace=namespace, check=False)
        assert refused.returncode != 0
        assert 'violates PodSecurity "restricted:latest"' in refused.stderr
        assert "allowPrivilegeEscalation != false" in refused.stderr
        assert "runAsNonRoot != true" in refused.stderr

        compliant = _pod(
            "careful", "import os; open('/dev/termination-log', 'w').write(f'{os.getuid()}:{os.getgid()}')",
            security={"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            pod_security={"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 3000,
                          "seccompProfile": {"type": "RuntimeDefault"}},
        )
        cluster.apply(compliant, namespace=namespace)
        terminated = _terminated(cluster, namespace, "careful")
        # The agent really drops to the pod's user: the venv's Python (under 0700 /root) still runs.
        assert (terminated["exitCode"], terminated["message"]) == (0, "1000:3000"), terminated


def test_service_account_token_is_denied_until_a_role_is_bound(cluster, cluster_namespace):
    namespace = cluster_namespace
    cluster.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    token = cluster.kubectl("create", "token", "reader", "-n", namespace, "--duration=10m").stdout.strip()
    as_reader = ("--token", token, "-n", namespace)

    denied = cluster.kubectl("get", "configmaps", *as_reader, check=False)
    assert denied.returncode != 0
    assert (f'User "system:serviceaccount:{namespace}:reader" cannot list resource "configmaps" in API group "" '
            f'in the namespace "{namespace}"') in denied.stderr

    cluster.kubectl("create", "role", "read-configmaps", "--verb=get,list", "--resource=configmaps", "-n", namespace)
    cluster.kubectl("create", "rolebinding", "reader-reads", "--role=read-configmaps",
                    f"--serviceaccount={namespace}:reader", "-n", namespace)
    allowed = cluster.wait_for("the RoleBinding to take effect", lambda: (
        lambda r: r if r.returncode == 0 else None)(cluster.kubectl("get", "configmaps", "-o", "json",
                                                                   *as_reader, check=False)), timeout=20)
    names = [item["metadata"]["name"] for item in json.loads(allowed.stdout)["items"]]
    assert "kube-root-ca.crt" in names
    # Still nothing beyond the Role.
    assert cluster.kubectl("get", "secrets", *as_reader, check=False).returncode != 0


def test_pod_uses_its_own_service_account_in_cluster(cluster, cluster_namespace):
    """The kube-api-access projected volume plus KUBERNETES_SERVICE_* make in-cluster config work, under RBAC."""
    namespace = cluster_namespace
    cluster.kubectl("create", "serviceaccount", "operator", "-n", namespace)
    cluster.kubectl("create", "role", "list-pods", "--verb=list", "--resource=pods", "-n", namespace)
    cluster.kubectl("create", "rolebinding", "operator-lists", "--role=list-pods",
                    f"--serviceaccount={namespace}:operator", "-n", namespace)
    script = (
        "import json\n"
        "from kubernetes import client, config\n"
        "config.load_incluster_config()\n"
        "api = client.CoreV1Api()\n"
        "ns = open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read()\n"
        "pods = [p.metadata.name for p in api.list_namespaced_pod(ns).items]\n"
        "try:\n"
        "    api.list_namespaced_secret(ns); secrets = 'allowed'\n"
        "except client.ApiException as err:\n"
        "    secrets = err.status\n"
        "open('/dev/termination-log', 'w').write(json.dumps({'pods': pods, 'secrets': secrets}))\n"
    )
    cluster.apply(_pod("in-cluster", script, image="codex-operator:test", serviceAccountName="operator"),
                  namespace=namespace)
    terminated = _terminated(cluster, namespace, "in-cluster", timeout=90)
    assert terminated["exitCode"] == 0, cluster.pod_logs(namespace, "in-cluster")
    assert json.loads(terminated["message"]) == {"pods": ["in-cluster"], "secrets": 403}
