"""Failure paths on the embedded cluster: invalid input, deletion, a crashed trainer, a preempted
trainer, and an operator killed mid-run. Each ends where a user would look: status, events, Jobs."""

from __future__ import annotations

import json
import signal

import pytest
from e2e_support import (condition, events_for, get, kill_container, sample_data, status_of, tiny_run, wait,
                         wait_phase)

pytestmark = pytest.mark.cluster
# How the operator is installed for this module (see conftest.py).
INSTALL = "kustomize"
NAMESPACE_OBJECTS = sample_data()  # in each test's own namespace (see conftest.py)


def trainer_pods(cluster, namespace: str, run: str) -> list[dict]:
    """The training Job's pods (not the sandbox's or the publish stage's)."""
    pods = cluster.get_json("pods", "-n", namespace, "-l",
                            f"codex.dev/training-run={run},app.kubernetes.io/component=trainer")["items"]
    return sorted(pods, key=lambda p: p["metadata"]["creationTimestamp"])


def checkpoints_on_volume(cluster, namespace: str, run: str) -> list[str]:
    """checkpoint-<step> directories the trainer completed on the run's checkpoint PVC (host side)."""
    claim = get(cluster, "pvc", f"{run}-checkpoints", namespace)
    volume = cluster.agent_dir / "pv" / claim["spec"]["volumeName"]
    return sorted(p.name for p in volume.glob("checkpoint-*") if (p / "codex_state.json").exists())


def resumed_from(cluster, namespace: str, pod: str) -> list[dict]:
    lines = cluster.pod_logs(namespace, pod, "trainer").splitlines()
    events = []
    for line in lines:
        try:
            record = json.loads(line[line.index("{"):])
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == "resume":
            events.append(record)
    return events


def test_invalid_spec_is_refused_with_the_field_named(cluster, namespace):
    bad = tiny_run("bad-sources")
    bad["spec"]["dataset"]["source"]["url"] = "https://example.com/extra.jsonl"
    refused = cluster.apply(bad, namespace=namespace, check=False)
    assert refused.returncode != 0
    assert "spec.dataset.source" in refused.stderr and "exactly one of hub, pvc, url or configMap" in refused.stderr


def test_invalid_data_fails_once_and_names_the_line(cluster, namespace):
    broken = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "broken-data"},
              "data": {"train.jsonl": '{"prompt": "a", "completion": "b"}\nnot json at all\n'}}
    run = tiny_run("bad-data")
    run["spec"]["dataset"]["source"] = {"configMap": {"name": "broken-data", "key": "train.jsonl"}}
    cluster.apply(broken, run, namespace=namespace)
    status = wait_phase(cluster, namespace, "bad-data", ("Succeeded", "Failed"), timeout=240)
    assert status["phase"] == "Failed" and condition(status, "Ready")["reason"] in ("InvalidData", "InvalidSpec")
    assert "line 2" in status["message"], status["message"]
    assert status["attempts"] == 1  # exit 42: podFailurePolicy fails the Job without retrying


def test_deleting_a_run_removes_its_children(cluster, namespace):
    run = tiny_run("doomed")
    run["spec"]["job"]["suspend"] = True  # nothing needs to train for this
    cluster.apply(run, namespace=namespace)
    status = wait_phase(cluster, namespace, "doomed", ("Pending",), timeout=60)
    wait("the suspended Job", lambda: condition(status_of(cluster, "cxrun", "doomed", namespace), "Ready").get(
        "reason") == "Suspended", 60)
    children = ["job/doomed-train", "configmap/doomed-spec", "pvc/doomed-checkpoints", "serviceaccount/doomed-trainer",
                "role/doomed-trainer", "rolebinding/doomed-trainer"]
    for child in children:
        owner = cluster.get_json(child, "-n", namespace)["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("CodexTrainingRun", "doomed", True)
    cluster.kubectl("delete", "cxrun", "doomed", "-n", namespace)

    def gone():
        left = cluster.kubectl("get", *children, "-n", namespace, "--ignore-not-found", "-o", "name").stdout
        return not left.strip()
    wait("garbage collection of the run's children", gone, 90)


def test_crashed_trainer_is_retried_and_resumes_from_its_checkpoint(cluster, namespace):
    cluster.apply(tiny_run("crashy", steps=100, save_steps=10), namespace=namespace)
    wait("a first checkpoint", lambda: checkpoints_on_volume(cluster, namespace, "crashy"), 240, interval=0.2)
    first = trainer_pods(cluster, namespace, "crashy")[0]["metadata"]["name"]
    kill_container(cluster, namespace, first, "trainer", signal.SIGKILL)
    status = wait_phase(cluster, namespace, "crashy", ("Succeeded", "Failed"), timeout=600)
    assert status["phase"] == "Succeeded", status.get("message")
    assert status["attempts"] == 2
    pods = trainer_pods(cluster, namespace, "crashy")
    assert pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 137
    resumes = resumed_from(cluster, namespace, pods[-1]["metadata"]["name"])
    assert resumes and resumes[0]["step"] > 0
    assert "Retrying" in [e["reason"] for e in events_for(cluster, namespace, "crashy")]


def test_preempted_trainer_checkpoints_on_sigterm_and_resumes(cluster, namespace):
    cluster.apply(tiny_run("preempted", steps=100, save_steps=50), namespace=namespace)

    def training():
        pods = trainer_pods(cluster, namespace, "preempted")
        logs = cluster.pod_logs(namespace, pods[0]["metadata"]["name"], "trainer") if pods else ""
        return pods[0]["metadata"]["name"] if '"event": "step"' in logs or '"stage": "train"' in logs else None
    first = wait("training to start", training, 240, interval=0.2)
    cluster.kubectl("delete", "pod", first, "-n", namespace, "--wait=false")  # SIGTERM, as a drain would send
    status = wait_phase(cluster, namespace, "preempted", ("Succeeded", "Failed"), timeout=600)
    assert status["phase"] == "Succeeded", status.get("message")
    # The drained pod is gone from the API (deleted); its replacement resumed and finished.
    pods = trainer_pods(cluster, namespace, "preempted")
    assert [p["metadata"]["name"] for p in pods] != [first]
    # The Job counts the drained pod once its finalizer is processed; attempts follows it.
    wait("attempts to count the drained pod",
         lambda: status_of(cluster, "codextrainingrun", "preempted", namespace).get("attempts") == 2, 90)
    assert resumed_from(cluster, namespace, pods[-1]["metadata"]["name"])


def test_operator_killed_mid_run_creates_no_duplicate_job(cluster, namespace, operator):
    cluster.apply(tiny_run("survivor", steps=60, save_steps=20), namespace=namespace)
    wait_phase(cluster, namespace, "survivor", ("Running", "Pending", "Evaluating"), timeout=120)
    wait("the Job", lambda: cluster.kubectl("get", "job", "survivor-train", "-n", namespace, check=False)
         .returncode == 0, 60)
    job_uid = get(cluster, "job", "survivor-train", namespace)["metadata"]["uid"]
    operator.restart()
    status = wait_phase(cluster, namespace, "survivor", ("Succeeded", "Failed"), timeout=600)
    assert status["phase"] == "Succeeded", status.get("message")
    jobs = {j["metadata"]["name"]: j["metadata"]["uid"] for j in cluster.get_json("jobs", "-n", namespace)["items"]}
    # One Job per stage, and the training Job is the one created before the restart.
    assert sorted(jobs) == ["survivor-publish", "survivor-sandbox", "survivor-train"]
    assert jobs["survivor-train"] == job_uid
