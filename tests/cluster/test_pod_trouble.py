"""Pods that cannot start are reported at once, with their last log lines and events: a crash loop, a
command that cannot exec, a pod no Node fits. (What ``make demo`` stops on instead of its timeout.)"""

from __future__ import annotations

import pytest

from localcluster.controlplane import WaitAborted
from localcluster.podtrouble import pod_problem

IMAGE = "codex-trainer:test"


def _status(**container) -> dict:
    return {"metadata": {"name": "p", "namespace": "n"}, "status": {"containerStatuses": [{"name": "main", **container}]}}


@pytest.mark.parametrize("pod, expected", [
    (_status(state={"running": {}}), None),
    (_status(state={"waiting": {"reason": "ContainerCreating"}}), None),
    # Once may be a dependency that is not up yet: kubelet backs off either way, so do not give up yet.
    (_status(restartCount=0, state={"waiting": {"reason": "CrashLoopBackOff"}}), None),
    (_status(restartCount=1, state={"waiting": {"reason": "CrashLoopBackOff"}},
             lastState={"terminated": {"reason": "Error", "exitCode": 2, "message": "no config"}}),
     "container main: CrashLoopBackOff: last run ended Error (exit code 2): no config"),
    (_status(state={"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "s" not found'}}),
     'container main: CreateContainerConfigError: secret "s" not found'),
    (_status(state={"terminated": {"reason": "StartError", "exitCode": 128, "message": "exec: not found"}}),
     "container main: StartError: exec: not found"),
    ({"metadata": {"name": "p", "namespace": "n"}, "status": {"conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/2 nodes are available"}]}},
     "Unschedulable: 0/2 nodes are available"),
    ({"metadata": {"name": "p", "namespace": "n", "deletionTimestamp": "x"}, "status": {"conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}}, None),
], ids=["running", "creating", "crashed-once", "crash-loop", "config-error", "start-error", "unschedulable",
        "being-deleted"])
def test_pod_problem(pod, expected):
    assert pod_problem(pod) == expected


def _stopped(cluster, namespace: str, selector: str) -> str:
    with pytest.raises(WaitAborted) as stopped:
        cluster.wait_for("a pod that cannot start", lambda: False, timeout=120, interval=0.5,
                         alive=lambda: cluster.pod_trouble(namespace, selector))
    return str(stopped.value)


@pytest.mark.cluster
def test_a_crash_loop_is_reported_with_its_logs_and_events(cluster, cluster_namespace):
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "crash"}, "spec": {
        "selector": {"matchLabels": {"app": "crash"}}, "template": {"metadata": {"labels": {"app": "crash"}}, "spec": {
            "containers": [{"name": "main", "image": IMAGE, "command": [
                "python", "-c", "import sys; print('reading /etc/app.conf'); sys.exit('app.conf: no such file')"]}]}}}}
    cluster.apply(deployment, namespace=cluster_namespace)
    report = _stopped(cluster, cluster_namespace, "app=crash")
    assert "cannot start: container main: CrashLoopBackOff: last run ended Error (exit code 1)" in report
    assert "    reading /etc/app.conf" in report and "app.conf: no such file" in report
    assert "Warning BackOff" in report


@pytest.mark.cluster
def test_a_command_that_cannot_exec_is_reported(cluster, cluster_namespace):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "noexec", "labels": {"app": "noexec"}},
           "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": IMAGE,
                                                              "command": ["codex-no-such-command"]}]}}
    cluster.apply(pod, namespace=cluster_namespace)
    report = _stopped(cluster, cluster_namespace, "app=noexec")
    assert 'container main: StartError: exec: "codex-no-such-command": executable file not found in $PATH' in report


@pytest.mark.cluster
def test_a_pod_no_node_fits_is_reported_unschedulable(cluster, cluster_namespace):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nowhere", "labels": {"app": "nowhere"}},
           "spec": {"nodeSelector": {"codex.dev/no-such-node": "true"},
                    "containers": [{"name": "main", "image": IMAGE, "command": ["true"]}]}}
    cluster.apply(pod, namespace=cluster_namespace)
    report = _stopped(cluster, cluster_namespace, "app=nowhere")
    assert f"cannot start: Unschedulable: 0/{len(cluster.nodes)} nodes are available" in report
    assert "Warning FailedScheduling" in report
