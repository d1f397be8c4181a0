"""The model's children are server-side applied (field manager codex-operator): a field changed by
hand is put back, and a field another manager owns (replicas under an HPA) is left to it.

The model is the builtin runtime on the embedded tiny model; its adapter's PVC does not exist, so
its pods stay Pending: the Deployment is all these tests need, and nothing runs."""

from __future__ import annotations

import json
import time

import pytest
from e2e_support import get, wait

pytestmark = pytest.mark.cluster
# How the operator is installed for this module (see conftest.py).
INSTALL = "kustomize"
MANAGER = "codex-operator"


def pending_model(name: str, **spec) -> dict:
    return {
        "apiVersion": "codex.dev/v1alpha1", "kind": "CodexModel", "metadata": {"name": name},
        "spec": {"baseModel": {"embedded": "tiny-llama"}, "runtime": "builtin",
                 "adapter": {"pvc": {"claimName": "no-such-claim", "path": "/adapter"}},
                 "resources": {"cpu": "100m", "memory": "256Mi"}, **spec},
    }


def deployment(cluster, namespace: str, name: str) -> dict:
    """The model's Deployment, with its managedFields."""
    return cluster.get_json("deployment", f"{name}-server", "-n", namespace, "--show-managed-fields")


def server(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]["containers"][0]


def applied_fields(obj: dict) -> dict:
    """What codex-operator owns through apply, as the apiserver records it."""
    entries = [m for m in obj["metadata"]["managedFields"] if m["manager"] == MANAGER]
    assert [m["operation"] for m in entries] == ["Apply"], entries
    return entries[0]["fieldsV1"]


def managers_of(obj: dict, *path: str) -> list[str]:
    """The managers whose recorded fields include ``path`` (``f:`` keys under metadata.managedFields)."""
    found = []
    for entry in obj["metadata"]["managedFields"]:
        fields = entry.get("fieldsV1") or {}
        for key in path:
            fields = fields.get(f"f:{key}") if isinstance(fields, dict) else None
        if fields is not None:
            found.append(entry["manager"])
    return found


def written_by_operator(obj):
    """The object's generation and the operator's managedFields entries (an effective write changes them)."""
    return obj["metadata"]["generation"], [e for e in obj["metadata"]["managedFields"] if e["manager"] == MANAGER]


def test_a_field_changed_by_hand_is_put_back(cluster, namespace, operator):
    cluster.apply(pending_model("hand"), namespace=namespace)
    desired = wait("the Deployment", lambda: deployment(cluster, namespace, "hand"), 60)
    assert "f:spec" in applied_fields(desired) and "codex.dev/desired-hash" not in (
        desired["metadata"].get("annotations") or {})
    cluster.kubectl("label", "deployment", "hand-server", "-n", namespace, "app.kubernetes.io/part-of=someone",
                    "--overwrite")
    cluster.kubectl("patch", "deployment", "hand-server", "-n", namespace, "--field-manager=someone",
                    "-p", json.dumps({"spec": {"template": {"spec": {"containers": [
                        {"name": "server", "image": "codex-serve:tampered"}]}}}}))

    def put_back():
        live = deployment(cluster, namespace, "hand")
        return live if (live["metadata"]["labels"]["app.kubernetes.io/part-of"] == "codex-operator"
                        and server(live)["image"] == server(desired)["image"]) else None
    live = wait("the label and the image to be put back", put_back, 60)
    assert managers_of(live, "spec", "template", "spec", "containers") == [MANAGER]

    # Stable: the operator writes the Deployment no more (its generation and the operator's managed
    # fields, with their time, stay as they are; that it sends no request is reconcile_model's unit test).
    wait("the rollout's status to settle", lambda: deployment(cluster, namespace, "hand")["status"].get(
        "observedGeneration") == live["metadata"]["generation"], 30)
    before = written_by_operator(deployment(cluster, namespace, "hand"))
    time.sleep(6)
    assert written_by_operator(deployment(cluster, namespace, "hand")) == before


def test_replicas_set_by_another_manager_are_not_fought_over(cluster, namespace, operator):
    model = pending_model("scaled", autoscaling={"minReplicas": 1, "maxReplicas": 4})
    cluster.apply(model, namespace=namespace)
    wait("the HPA", lambda: get(cluster, "hpa", "scaled-server", namespace), 60)
    first = deployment(cluster, namespace, "scaled")
    assert "f:replicas" not in applied_fields(first)["f:spec"]

    cluster.kubectl("scale", "deployment", "scaled-server", "-n", namespace, "--replicas=2")
    # A spec change makes the operator apply the Deployment (new args) and the HPA (a higher floor).
    model["spec"].update(server={"maxNewTokens": 99}, autoscaling={"minReplicas": 3, "maxReplicas": 4})
    cluster.apply(model, namespace=namespace)
    applied = wait("the operator to apply the new args", lambda: (lambda d: d if "99" in server(d)["args"] else None)(
        deployment(cluster, namespace, "scaled")), 60)
    assert applied["spec"]["replicas"] in (2, 3)  # kubectl's 2, or already the HPA's floor: never reset
    raised = wait("the HPA to raise replicas to its floor", lambda: (
        lambda d: d if d["spec"]["replicas"] == 3 else None)(deployment(cluster, namespace, "scaled")), 60)
    assert "f:replicas" not in applied_fields(raised)["f:spec"]
    assert MANAGER not in managers_of(raised, "spec", "replicas")
    time.sleep(4)
    assert deployment(cluster, namespace, "scaled")["spec"]["replicas"] == 3
