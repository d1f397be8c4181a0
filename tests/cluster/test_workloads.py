"""Jobs, Deployments and garbage collection through the real controller manager, scheduler and node agent."""

from __future__ import annotations

import ipaddress
import time
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.cluster

TRAINER = "codex-trainer:test"


def _job(name: str, script: str, **spec) -> dict:
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"backoffLimit": 0, **spec, "template": {"spec": {
            "restartPolicy": "Never", "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "main", "image": TRAINER, "command": ["python", "-c", script]}]}}},
    }


def test_job_completes_with_termination_message(cluster, cluster_namespace):
    script = ("import os; print('trained on', os.environ['HOSTNAME']); "
              "open('/dev/termination-log', 'w').write('{\"loss\": 0.42}')")
    cluster.apply(_job("train", script), namespace=cluster_namespace)
    cluster.kubectl("wait", "--for=condition=Complete", "job/train", "-n", cluster_namespace, "--timeout=90s")

    job = cluster.get_json("job/train", "-n", cluster_namespace)
    assert job["status"]["succeeded"] == 1
    pod = cluster.get_json("pods", "-n", cluster_namespace, "-l", "job-name=train")["items"][0]
    assert pod["status"]["phase"] == "Succeeded"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"], terminated["message"]) == (0, "Completed", '{"loss": 0.42}')
    name = pod["metadata"]["name"]
    assert cluster.pod_logs(cluster_namespace, name) == f"trained on {name}\n"
    # The same output through the apiserver, which reaches the agent's kubelet API.
    assert cluster.kubectl("logs", "-n", cluster_namespace, name).stdout == f"trained on {name}\n"


def test_failed_job_reports_exit_code_and_log_tail(cluster, cluster_namespace):
    job = _job("fails", "import sys; print('loading'); print('CUDA out of memory'); sys.exit(3)")
    job["spec"]["template"]["spec"]["containers"][0]["terminationMessagePolicy"] = "FallbackToLogsOnError"
    cluster.apply(job, namespace=cluster_namespace)
    cluster.kubectl("wait", "--for=condition=Failed", "job/fails", "-n", cluster_namespace, "--timeout=90s")
    pod = cluster.get_json("pods", "-n", cluster_namespace, "-l", "job-name=fails")["items"][0]
    assert pod["status"]["phase"] == "Failed"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
    assert terminated["message"] == "loading\nCUDA out of memory"


def test_deployment_becomes_available_behind_readiness_probe(cluster, cluster_namespace):
    content = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "site"},
               "data": {"index.html": "hello from the local node\n"}}
    container = {
        "name": "web", "image": TRAINER,
        # Both replicas listen on 8080: each on its own pod IP.
        "command": ["python", "-m", "http.server", "--bind", "$(POD_IP)", "--directory", "/srv/site", "8080"],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/index.html", "port": "http"}, "periodSeconds": 1},
        "volumeMounts": [{"name": "site", "mountPath": "/srv/site", "readOnly": True}],
    }
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"terminationGracePeriodSeconds": 2, "containers": [container],
                     "volumes": [{"name": "site", "configMap": {"name": "site"}}]}}},
    }
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}
    cluster.apply(content, deployment, service, namespace=cluster_namespace)
    cluster.kubectl("wait", "--for=condition=Available", "deployment/web", "-n", cluster_namespace, "--timeout=90s")

    status = cluster.get_json("deployment/web", "-n", cluster_namespace)["status"]
    assert (status["readyReplicas"], status["availableReplicas"]) == (2, 2)
    pods = cluster.get_json("pods", "-n", cluster_namespace, "-l", "app=web")["items"]
    ips = {p["status"]["podIP"] for p in pods}
    assert len(ips) == 2 and all(ipaddress.ip_address(p["status"]["podIP"]) in ipaddress.ip_network(
        cluster.get_json(f"node/{p['spec']['nodeName']}")["spec"]["podCIDR"]) for p in pods), ips
    url = cluster.service_address(cluster_namespace, "web", 80)
    page = cluster.wait_for("service web to answer on its ClusterIP", lambda: _get(url + "/index.html"))
    assert page == "hello from the local node\n"


def _get(url: str) -> str | None:
    """The body, or None while kube-proxy has no endpoint for it yet (refused)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()
    except urllib.error.URLError as error:
        if isinstance(error, urllib.error.HTTPError):
            raise
        return None


def test_deleting_a_job_collects_its_pods(cluster, cluster_namespace):
    job = _job("sleeper", "import time; time.sleep(600)", parallelism=2, completions=2)
    cluster.apply(job, namespace=cluster_namespace)
    cluster.wait_for("both sleeper pods running", lambda: [
        p for p in cluster.get_json("pods", "-n", cluster_namespace, "-l", "job-name=sleeper")["items"]
        if p["status"].get("phase") == "Running"][1:], timeout=60)

    cluster.kubectl("delete", "job/sleeper", "-n", cluster_namespace, "--cascade=background", "--wait=false")
    started = time.monotonic()
    cluster.wait_for("the garbage collector to remove the Job's pods", lambda: not cluster.get_json(
        "pods", "-n", cluster_namespace, "-l", "job-name=sleeper")["items"], timeout=60)
    # SIGTERM ends `sleep` at once: the pods do not wait out their grace period.
    assert time.monotonic() - started < 30
