"""reconcile_run against a recording fake client and in-memory views: the exact calls it makes.

The example run (fixtures/run.yaml) owns a spec ConfigMap, a ServiceAccount, a checkpoint PVC,
the Job, and a Role and RoleBinding for its status reports.
"""

from __future__ import annotations

import asyncio
import copy

import pytest
from fake_kube import FakeKube, make_state, views
from op_examples import RUN_UID, example

from codex_api import CodexTrainingRun, parse
from codex_operator.config import OperatorConfig
from codex_operator.k8s import ApiError
from codex_operator.status import reasons
from codex_operator.sync_runs import build_run_children, reconcile_run, run_key
from codex_operator.workqueue import Requeue

NS, NAME = "team-a", "codex-demo"
KEY = run_key(NS, NAME)
CM, SA, PVC = ("ConfigMap", "codex-demo-spec"), ("ServiceAccount", "codex-demo-trainer"), \
    ("PersistentVolumeClaim", "codex-demo-checkpoints")
WORK, NETPOL = ("PersistentVolumeClaim", "codex-demo-work"), ("NetworkPolicy", "codex-demo-sandbox")
JOB, ROLE, BINDING = ("Job", "codex-demo-train"), ("Role", "codex-demo-trainer"), ("RoleBinding", "codex-demo-trainer")
STATUS = ("patch/status", "CodexTrainingRun", NAME)
EVENT = ("create", "Event")


def run_body(**status):
    body = example("run.yaml", "CodexTrainingRun")
    body["metadata"]["resourceVersion"] = "10"
    if status:
        body["status"] = status
    return body


def children(body):
    """The run's children as the operator builds and adopts them (the owner reference included)."""
    chains = build_run_children(parse(CodexTrainingRun, body), OperatorConfig())
    owner = {"apiVersion": "codex.dev/v1alpha1", "kind": "CodexTrainingRun", "name": NAME, "uid": RUN_UID,
             "controller": True, "blockOwnerDeletion": True}
    objs = [child for chain in chains.values() for wave in chain for child in wave]
    for obj in objs:
        obj["metadata"]["ownerReferences"] = [owner]
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in objs}


def fake(body, *objs):
    """A fake apiserver holding the run (so its status patch lands) and ``objs``."""
    kube = FakeKube()
    kube.plant(body, *objs)
    return kube


def reconcile(kube, view):
    """Run one reconcile and the Events it posted; returns the calls without the Events' names."""
    async def go():
        state = make_state(kube, view)
        await reconcile_run(state, KEY)
        await asyncio.gather(*state.posting)
        return state
    state = asyncio.run(go())
    return [call if call[1] != "Event" else call[:2] for call in kube.calls], state


def creates(*objs):
    return [("create", kind, name) for kind, name in objs]


def test_a_new_run_gets_its_children_in_order_then_one_status_write():
    body = run_body()
    kube = fake(body)
    calls, _ = reconcile(kube, views(runs=[body]))
    assert calls == creates(CM, SA, PVC, WORK, NETPOL, JOB, ROLE, BINDING) + [STATUS, EVENT]
    status = kube.store["CodexTrainingRun", NAME]["status"]
    assert (status["phase"], status["jobName"], status["observedGeneration"]) == ("Pending", JOB[1], 1)


def test_a_creation_cut_short_finds_what_exists_and_creates_the_rest():
    body = run_body()
    built = children(body)
    kube = fake(body, built[CM], built[SA], built[JOB])  # the operator died after the Job
    job = kube.store[JOB]
    calls, state = reconcile(kube, views(runs=[body], jobs=[job]))
    assert calls == [
        ("create", *CM), ("get", *CM), ("apply", *CM),  # the rendered spec is brought up to date
        ("create", *SA), ("get", *SA), ("create", *PVC), ("create", *WORK), ("create", *NETPOL),
        ("create", *JOB), ("get", *JOB),  # found and adopted: never a second Job
        *creates(ROLE, BINDING), STATUS, EVENT]
    assert state.tracked[KEY].job["metadata"]["uid"] == job["metadata"]["uid"]


def test_a_spec_fixed_after_it_was_refused_creates_the_children():
    body = run_body(phase="Failed", conditions=[{"type": "Ready", "status": "False", "reason": reasons.INVALID_SPEC,
                                                 "message": "spec.lora.r: ...", "lastTransitionTime": "x"}])
    body["metadata"]["generation"] = 2
    calls, _ = reconcile(fake(body), views(runs=[body]))
    assert calls == creates(CM, SA, PVC, WORK, NETPOL, JOB, ROLE, BINDING) + [STATUS, EVENT]


def test_an_invalid_spec_creates_nothing_and_names_the_field():
    body = run_body()
    body["spec"]["lora"]["r"] = 0
    kube = fake(body)
    calls, _ = reconcile(kube, views(runs=[body]))
    assert calls == [STATUS, EVENT]
    ready = next(c for c in kube.store["CodexTrainingRun", NAME]["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["reason"], ready["message"].split(":")[0]) == (reasons.INVALID_SPEC, "spec.lora.r")


def test_a_job_deleted_before_it_finished_is_created_again():
    body = run_body(phase="Running", jobName=JOB[1], observedGeneration=1)
    built = children(body)
    kube = fake(body, *(built[k] for k in (CM, SA, PVC, WORK, NETPOL, ROLE, BINDING)))
    calls, _ = reconcile(kube, views(runs=[body]))  # no Job in the index
    assert calls == [("create", *CM), ("get", *CM), ("apply", *CM), ("create", *SA), ("get", *SA),
                     ("create", *PVC), ("get", *PVC), ("create", *WORK), ("get", *WORK), ("create", *NETPOL),
                     ("get", *NETPOL), ("create", *JOB),
                     ("create", *ROLE), ("get", *ROLE), ("create", *BINDING), ("get", *BINDING), STATUS, EVENT]
    assert kube.has(*JOB)


def test_a_child_owned_by_something_else_is_left_alone_and_the_run_waits():
    body = run_body()
    foreign = copy.deepcopy(children(body)[CM])
    foreign["metadata"]["ownerReferences"] = [{"kind": "ConfigMap", "name": "other", "uid": "someone-else"}]
    kube = fake(body, foreign)
    with pytest.raises(Requeue, match="ConfigMap team-a/codex-demo-spec exists and is not owned"):
        reconcile(kube, views(runs=[body]))
    assert kube.calls == [("create", *CM), ("get", *CM), ("create", *SA), ("create", *PVC), ("create", *WORK),
                          ("create", *NETPOL)]
    assert kube.store[CM]["metadata"]["ownerReferences"][0]["uid"] == "someone-else"  # not taken over
    assert not kube.has(*JOB)


def test_a_409_for_a_job_the_index_has_not_seen_yet_adopts_it():
    body = run_body()
    kube = fake(body, children(body)[JOB])  # created by this run, not yet delivered by the watch
    calls, state = reconcile(kube, views(runs=[body]))
    assert calls == creates(CM, SA, PVC, WORK, NETPOL) + [("create", *JOB), ("get", *JOB)] + creates(ROLE, BINDING) + [
        STATUS, EVENT]
    assert sum(1 for kind, _ in kube.store if kind == "Job") == 1
    assert state.tracked[KEY].job["metadata"]["name"] == JOB[1]


def test_a_409_for_an_object_being_deleted_fails_the_reconcile_for_a_retry():
    body = run_body()
    kube = fake(body)
    kube.failures[("create", *CM)] = ApiError(409, "AlreadyExists", "being deleted")  # and then GET says 404
    with pytest.raises(ApiError, match="409 Conflict: ConfigMap codex-demo-spec was being deleted"):
        reconcile(kube, views(runs=[body]))
    assert kube.calls[:2] == [("create", *CM), ("get", *CM)]
    assert not kube.has(*JOB)


REFUSED_JOB = ApiError(422, "Invalid", 'Job.batch "codex-demo-train" is invalid: '
                       'spec.template.spec.nodeSelector: Invalid value: "x": a label key')


def test_a_refused_job_leaves_nothing_half_made_behind():
    body = run_body()
    kube = fake(body)
    kube.failures[("create", *JOB)] = REFUSED_JOB
    calls, _ = reconcile(kube, views(runs=[body]))
    made = [CM, SA, PVC, WORK, NETPOL]
    assert calls == creates(*made, JOB) + [("delete", *child) for child in reversed(made)] + [STATUS, EVENT]
    assert sorted(kind for kind, _ in kube.store) == ["CodexTrainingRun", "Event"]


def test_a_refused_job_keeps_a_volume_an_earlier_attempt_left():
    body = run_body(phase="Running", jobName=JOB[1])  # its Job was deleted before it finished
    built = children(body)
    kube = fake(body, built[PVC], built[WORK], built[SA])
    kube.failures[("create", *JOB)] = REFUSED_JOB
    reconcile(kube, views(runs=[body]))
    assert kube.has(*PVC) and kube.has(*WORK)  # the checkpoints and the hand-off stay
    assert not kube.has(*CM) and not kube.has(*SA) and not kube.has(*NETPOL)
    ready = next(c for c in kube.store["CodexTrainingRun", NAME]["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == reasons.INVALID_SPEC


def test_a_stable_run_costs_no_call():
    body = run_body()
    kube = fake(body)
    reconcile(kube, views(runs=[body]))
    settled = copy.deepcopy(kube.store["CodexTrainingRun", NAME])  # as the watch delivers it
    settled["metadata"]["resourceVersion"] = "11"
    kube.calls.clear()
    calls, _ = reconcile(kube, views(runs=[settled], jobs=[kube.store[JOB]]))
    assert calls == []


def test_a_job_the_apiserver_refuses_is_invalid_spec_naming_the_spec_field_and_not_retried():
    body = run_body()
    kube = fake(body)
    kube.failures[("create", *JOB)] = ApiError(422, "Invalid", 'Job.batch "codex-demo-train" is invalid: '
                                               'spec.template.spec.nodeSelector: Invalid value: "x": a label key')
    state = make_state(kube, views(runs=[body]))

    async def go():
        await reconcile_run(state, KEY)
        await asyncio.gather(*state.posting)
    asyncio.run(go())
    status = kube.store["CodexTrainingRun", NAME]["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (status["phase"], ready["reason"]) == ("Failed", reasons.INVALID_SPEC)
    assert ready["message"].startswith("spec.resources.nodeSelector: the apiserver refused an object built from")
    assert ("create", "Event") in [c[:2] for c in kube.calls]
    # The same generation again: nothing is sent but what status needs (it is already written).
    kube.calls.clear()
    settled = copy.deepcopy(kube.store["CodexTrainingRun", NAME])
    settled["metadata"]["resourceVersion"] = "11"
    state.views = views(runs=[settled])
    asyncio.run(reconcile_run(state, KEY))
    assert kube.calls == []
