"""Server-side apply of the model's children (ssa.py, sync_models.apply_model_children): when an apply is
needed, and the calls it makes."""

from __future__ import annotations

import asyncio
import copy
from typing import Any, Optional

import pytest

from codex_operator.k8s import FIELD_MANAGER, NotOwnedError
from codex_operator.ssa import apply_child, contains, needs_apply, owned_within
from codex_operator.sync_models import apply_model_children
from codex_operator.workqueue import Requeue

OWNER = "uid-model"
DESIRED = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "m-server", "namespace": "team-a", "labels": {"app": "m"},
                 "ownerReferences": [{"uid": OWNER, "controller": True, "kind": "CodexModel", "name": "m"}]},
    "spec": {"template": {"spec": {"containers": [{
        "name": "server", "image": "serve:1",
        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        "resources": {"limits": {"memory": "1024Mi"}},
    }]}}},
}
# What the apiserver records the operator applied for DESIRED (metadata.managedFields[].fieldsV1).
FIELDS = {
    "f:metadata": {"f:labels": {"f:app": {}}, "f:ownerReferences": {f'k:{{"uid":"{OWNER}"}}': {}}},
    "f:spec": {"f:template": {"f:spec": {"f:containers": {'k:{"name":"server"}': {
        ".": {}, "f:name": {}, "f:image": {},
        "f:env": {'k:{"name":"A"}': {".": {}, "f:name": {}, "f:value": {}},
                  'k:{"name":"B"}': {".": {}, "f:name": {}, "f:value": {}}},
        "f:resources": {"f:limits": {"f:memory": {}}},
    }}}}},
}


def live_of(desired: dict[str, Any], fields: Optional[dict] = FIELDS) -> dict[str, Any]:
    """``desired`` as the apiserver returns it: defaults added, quantities canonical, fields recorded."""
    live = copy.deepcopy(desired)
    live["metadata"].update(uid="uid-deployment", resourceVersion="7")
    if fields is not None:
        live["metadata"]["managedFields"] = [{"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": fields}]
    if live["kind"] == "Deployment":
        container = live["spec"]["template"]["spec"]["containers"][0]
        container.update(imagePullPolicy="IfNotPresent", terminationMessagePath="/dev/termination-log")
        container["resources"]["limits"]["memory"] = "1Gi"
        live["spec"]["replicas"] = 1
        live["status"] = {"replicas": 1}
    return live


def without_env_b(obj: dict[str, Any]) -> dict[str, Any]:
    changed = copy.deepcopy(obj)
    env = changed["spec"]["template"]["spec"]["containers"][0]["env"]
    env[:] = [e for e in env if e["name"] != "B"]
    return changed


def test_a_stable_child_needs_no_apply():
    assert not needs_apply(DESIRED, live_of(DESIRED))


def test_a_field_changed_by_hand_needs_an_apply():
    live = live_of(DESIRED)
    live["metadata"]["labels"]["app"] = "edited"
    assert needs_apply(DESIRED, live)
    live = live_of(DESIRED)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "other:2"
    assert needs_apply(DESIRED, live)


def test_a_field_no_longer_wanted_needs_an_apply_that_removes_it():
    desired = without_env_b(DESIRED)
    live = live_of(DESIRED)  # still carries B, which the operator applied
    assert contains(live["metadata"], desired["metadata"]) and needs_apply(desired, live)
    assert not owned_within(FIELDS, desired)


def test_a_field_another_manager_set_is_left_to_it():
    live = live_of(DESIRED)
    live["spec"]["replicas"] = 5  # kubectl scale or the HPA: the operator does not apply replicas
    live["metadata"]["labels"]["team"] = "added-by-hand"
    assert not needs_apply(DESIRED, live)


def test_handing_replicas_to_an_hpa_is_one_apply():
    with_replicas = copy.deepcopy(DESIRED)
    with_replicas["spec"]["replicas"] = 2
    fields = copy.deepcopy(FIELDS)
    fields["f:spec"]["f:replicas"] = {}
    live = live_of(with_replicas, fields)
    assert needs_apply(DESIRED, live)  # the operator gives up spec.replicas
    assert not needs_apply(DESIRED, live_of(DESIRED))


@pytest.mark.parametrize(("live", "desired", "expected"), [
    ({"limits": {"cpu": "1000m"}}, {"limits": {"cpu": "1"}}, True),
    ({"limits": {"cpu": "500m"}}, {"limits": {"cpu": "1"}}, False),
    ({"env": [{"value": "1000m"}]}, {"env": [{"value": "1"}]}, False),
    ({"args": ["a", "b"]}, {"args": ["a"]}, False),
    ({"args": ["b", "a"]}, {"args": ["a", "b"]}, False),
], ids=["same-quantity", "other-quantity", "quantity-only-in-resources", "list-length", "list-order"])
def test_contains_compares_semantically(live, desired, expected):
    assert contains(live, desired) is expected


class RecordingKube:
    """Records each call; ``get`` answers ``found``, ``apply`` echoes the object."""

    def __init__(self, found: Optional[dict[str, Any]] = None):
        self.found = found
        self.calls: list[tuple[str, str]] = []

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> Optional[dict[str, Any]]:
        self.calls.append(("get", f"{kind} {namespace}/{name}"))
        return self.found

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("apply", f"{obj['kind']} {obj['metadata']['namespace']}/{obj['metadata']['name']}"))
        return live_of(obj)

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.calls.append(("delete", f"{kind} {namespace}/{name}"))


def foreign(desired: dict[str, Any]) -> dict[str, Any]:
    live = live_of(desired, fields=None)
    live["metadata"]["ownerReferences"] = [{"uid": "someone-else", "controller": True}]
    return live


CASES = [
    ("created-by-apply", RecordingKube(), None, [("get", "Deployment team-a/m-server"),
                                                 ("apply", "Deployment team-a/m-server")], True),
    ("not-indexed-yet-but-current", RecordingKube(live_of(DESIRED)), None, [("get", "Deployment team-a/m-server")],
     False),
    ("indexed-and-current", RecordingKube(), live_of(DESIRED), [], False),
    ("indexed-and-changed", RecordingKube(), live_of(without_env_b(DESIRED)), [
        ("apply", "Deployment team-a/m-server")], False),
]


@pytest.mark.parametrize(("kube", "live", "calls", "created"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_apply_child_calls(kube, live, calls, created):
    result, made = asyncio.run(apply_child(kube, DESIRED, live, OWNER))
    assert kube.calls == calls
    assert contains(result, DESIRED)
    assert made is created


def test_a_child_of_that_name_controlled_by_another_owner_is_not_taken_over():
    kube = RecordingKube(foreign(DESIRED))
    with pytest.raises(NotOwnedError, match="Deployment team-a/m-server exists and is not controlled"):
        asyncio.run(apply_child(kube, DESIRED, None, OWNER))
    assert kube.calls == [("get", "Deployment team-a/m-server")]


MODEL = {"metadata": {"name": "m", "namespace": "team-a", "uid": OWNER}}
SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "m-server", "namespace": "team-a"},
           "spec": {"ports": [{"port": 8000, "protocol": "TCP"}]}}
HPA = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
       "metadata": {"name": "m-server", "namespace": "team-a"}, "spec": {"maxReplicas": 3}}


class FakeState:
    def __init__(self, kube: RecordingKube):
        self.kube = kube


def test_model_children_are_applied_in_order_and_an_unwanted_hpa_is_deleted():
    kube = RecordingKube()
    children = {"Deployment": DESIRED, "Service": SERVICE, "HorizontalPodAutoscaler": None}
    live = {"Deployment": live_of(DESIRED), "Service": None, "HorizontalPodAutoscaler": live_of(HPA)}
    deployment = asyncio.run(apply_model_children(FakeState(kube), MODEL, children, live))
    assert kube.calls == [("get", "Service team-a/m-server"), ("apply", "Service team-a/m-server"),
                          ("delete", "HorizontalPodAutoscaler team-a/m-server")]
    assert deployment is live["Deployment"]


def test_a_child_owned_by_something_else_requeues_the_model():
    kube = RecordingKube(foreign(SERVICE))
    children = {"Deployment": DESIRED, "Service": SERVICE, "HorizontalPodAutoscaler": None}
    with pytest.raises(Requeue) as requeue:
        asyncio.run(apply_model_children(FakeState(kube), MODEL, children, {"Deployment": live_of(DESIRED)}))
    assert requeue.value.delay == 30 and "Service team-a/m-server exists" in str(requeue.value)
    assert kube.calls == [("get", "Service team-a/m-server")]
