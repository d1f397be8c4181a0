"""Multi-node training across pods: examples/run-multinode.yaml's shape on CPU (2 Nodes, 1 process
each, gloo), sharded with FSDP, through the operator, on the embedded cluster's real pod network.

The operator makes an Indexed Job and a headless Service. Each pod lands on a Node of its own, and
torchrun's two nodes meet at MASTER_ADDR, pod 0's DNS name behind that Service. Rank 0 alone
reports progress. Deleting one pod mid-run fails the other's collective too; the Job makes both
again, and they resume from the same sharded checkpoint (torch.distributed.checkpoint, a shard per
rank) on the shared (ReadWriteMany) work volume. The memory plan lands in status.memoryPlan.
"""

from __future__ import annotations

import json

import pytest
from e2e_support import example_docs, get, sample_data, tiny_run, wait, wait_phase

pytestmark = pytest.mark.cluster
INSTALL = "helm"
NAMESPACE_OBJECTS = sample_data()
STEPS, SAVE_STEPS = 25, 5


def _events(cluster, namespace: str, pod: str, name: str) -> list[dict]:
    """The trainer's structured log lines called ``name`` in a pod's log."""
    found = []
    for line in cluster.pod_logs(namespace, pod, "trainer").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == name:
            found.append(record)
    return found


def _pods(cluster, namespace: str) -> list[dict]:
    return cluster.get_json("pods", "-n", namespace, "-l", "codex.dev/training-run=multinode,"
                            "app.kubernetes.io/component=trainer")["items"]


def test_a_two_node_run_meets_over_the_headless_service_and_resumes_together(cluster, namespace):
    if not cluster.network.real or len(cluster.nodes) < 2:
        pytest.skip("needs the real pod network and two Nodes")
    shape = next(d for d in example_docs("run-multinode.yaml") if d["kind"] == "CodexTrainingRun")["spec"]
    run = tiny_run("multinode", steps=STEPS, save_steps=SAVE_STEPS)
    run["spec"]["resources"].update(nodes=shape["resources"]["nodes"], gpusPerNode=0)
    run["spec"]["job"]["backoffLimit"] = 6
    run["spec"]["training"]["sharding"] = "fsdp"
    del run["spec"]["evaluation"]  # training across nodes is the point; the code gates have their own tests
    cluster.apply(run, namespace=namespace)

    def both_past_a_checkpoint():
        pods = [p for p in _pods(cluster, namespace) if p["status"].get("phase") == "Running"]
        return pods if len(pods) == 2 and any(_events(cluster, namespace, p["metadata"]["name"], "checkpoint.saved")
                                              for p in pods) else None
    first = wait("both pods training past the first checkpoint", both_past_a_checkpoint, 420, interval=0.25)
    nodes = {p["spec"]["nodeName"] for p in first}
    assert len(nodes) == 2, nodes
    master = f"multinode-train-0.{get(cluster, 'service', 'multinode-workers', namespace)['metadata']['name']}"
    for pod in first:
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["MASTER_ADDR"] == master
        ready = _events(cluster, namespace, pod["metadata"]["name"], "trainer.ready")
        assert ready and (ready[-1]["world_size"], ready[-1]["sharding"]) == (2, "fsdp"), ready
    by_rank = {p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]: p["metadata"]["name"]
               for p in first}
    cluster.kubectl("delete", "pod", by_rank["1"], "-n", namespace, "--wait=false")
    # Rank 0 alone reports progress and saves checkpoints.
    for name in ("progress", "checkpoint.saved"):
        assert _events(cluster, namespace, by_rank["0"], name) and not _events(cluster, namespace, by_rank["1"], name)
    old = {p["metadata"]["name"] for p in first}

    def replaced():
        pods = [p for p in _pods(cluster, namespace) if p["metadata"]["name"] not in old
                and p["status"].get("phase") in ("Running", "Succeeded")]
        return pods if len(pods) == 2 and all(_events(cluster, namespace, p["metadata"]["name"], "resume")
                                              for p in pods) else None
    second = wait("both pods made again and resuming", replaced, 300)
    resumed = {p["metadata"]["name"]: _events(cluster, namespace, p["metadata"]["name"], "resume")[0] for p in second}
    assert len({(r["checkpoint"], r["step"]) for r in resumed.values()}) == 1, resumed
    assert next(iter(resumed.values()))["step"] >= SAVE_STEPS

    status = wait_phase(cluster, namespace, "multinode", ("Succeeded", "Failed"), timeout=600)
    assert status["phase"] == "Succeeded", status.get("message")
    assert status["progress"]["step"] == STEPS
    plan = status["memoryPlan"]
    assert (plan["worldSize"], plan["sharding"], plan["deviceMemorySource"]) == (2, "fsdp", "unknown"), plan
    assert plan["parameters"] == 106_816  # tiny-llama's, from its config.json
