"""compute_model_status as a table: the Deployment's state in, phase and conditions out."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from codex_api.model import ServedAdapter
from op_examples import example

from codex_operator.conditions import find_condition
from codex_operator.status import MODEL_OWNED_FIELDS, compute_model_status, status_patch
from codex_operator.status import reasons

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
SERVED_WIRE = {"source": "trainingRun", "trainingRun": "codex-demo", "revision": "rev-1",
               "claimName": "codex-artifacts", "path": "/codex-demo/adapter"}
SERVED = ServedAdapter.model_validate(SERVED_WIRE)
ENDPOINT = "http://codex-demo-server.team-a.svc:8000/v1"


def deployment(replicas=1, ready=1, updated=1, total=1, available=1, generation=2, observed=2, conditions=()):
    return {"metadata": {"name": "codex-demo-server", "generation": generation},
            "spec": {"replicas": replicas},
            "status": {"observedGeneration": observed, "replicas": total, "updatedReplicas": updated,
                       "readyReplicas": ready, "availableReplicas": available,
                       "conditions": [{"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conditions]}}


AVAILABLE = ("Available", "True", "MinimumReplicasAvailable", "")
UNAVAILABLE = ("Available", "False", "MinimumReplicasUnavailable", "")
CASES = [
    ("available", deployment(conditions=[AVAILABLE]), "Available", ("True", "False", "False", "True")),
    ("first-pod-starting", deployment(ready=0, available=0, conditions=[UNAVAILABLE]), "Progressing",
     ("False", "True", "False", "False")),
    ("rolling-to-new-adapter", deployment(total=2, updated=1, available=1, ready=1, conditions=[AVAILABLE]),
     "Progressing", ("True", "True", "False", "False")),
    ("new-template-not-observed", deployment(observed=1, conditions=[AVAILABLE]), "Progressing",
     ("True", "True", "False", "False")),
    ("stalled", deployment(ready=0, available=0, conditions=[UNAVAILABLE, (
        "Progressing", "False", "ProgressDeadlineExceeded", "ReplicaSet has timed out progressing.")]),
     "Degraded", ("False", "False", "True", "False")),
    ("scaled-to-zero", deployment(replicas=0, ready=0, updated=0, total=0, available=0), "Available",
     ("False", "False", "False", "False")),
]


@pytest.mark.parametrize("deployment_,phase,states", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_phase_and_conditions_follow_the_deployment(deployment_, phase, states):
    status = compute_model_status(example("model.yaml", "CodexModel"), deployment_, SERVED, NOW, endpoint=ENDPOINT)
    got = tuple(find_condition(status["conditions"], t)["status"] for t in ("Available", "Progressing", "Degraded",
                                                                           "Ready"))
    assert (status["phase"], got) == (phase, states)
    assert status["servedAdapter"] == SERVED_WIRE and status["deploymentName"] == "codex-demo-server"
    assert status["endpoint"] == ENDPOINT


def test_waiting_for_a_training_run_is_a_clear_condition_not_an_error():
    status = compute_model_status(example("model.yaml", "CodexModel"), None, None, NOW,
                                  waiting="waiting for a run matching {'codex.dev/model': 'codex-demo'}")
    ready = find_condition(status["conditions"], "Ready")
    assert (status["phase"], ready["status"], ready["reason"]) == ("Pending", "False", reasons.WAITING_FOR_TRAINING_RUN)
    assert "codex.dev/model" in ready["message"] and status["servedAdapter"] is None


def test_ready_replicas_and_stable_status_cause_no_patch():
    model = example("model.yaml", "CodexModel")
    first = compute_model_status(model, deployment(conditions=[AVAILABLE]), SERVED, NOW, endpoint=ENDPOINT)
    assert (first["readyReplicas"], first["replicas"]) == (1, 1)
    model["status"] = first
    again = compute_model_status(model, deployment(conditions=[AVAILABLE]), SERVED,
                                 datetime(2026, 1, 2, tzinfo=timezone.utc), endpoint=ENDPOINT)
    assert status_patch(first, again, MODEL_OWNED_FIELDS) == {}


def test_invalid_model_spec_is_degraded_with_the_field():
    from codex_api import CodexModel, SpecError, parse

    body = example("model.yaml", "CodexModel")
    body["spec"]["replicas"] = -1
    with pytest.raises(SpecError) as error:
        parse(CodexModel, body)
    status = compute_model_status(body, None, None, NOW, invalid=error.value)
    degraded = find_condition(status["conditions"], "Degraded")
    assert (status["phase"], degraded["reason"]) == ("Degraded", reasons.INVALID_SPEC)
    assert "spec.replicas" in degraded["message"]


def test_served_adapter_is_typed_from_the_wire_and_back():
    from codex_operator.status.model import served_adapter_of

    assert served_adapter_of({"servedAdapter": SERVED_WIRE}) == SERVED and SERVED.to_wire() == SERVED_WIRE
    assert served_adapter_of({}) is None
    assert served_adapter_of({"servedAdapter": {"source": "ftp"}}) is None  # unreadable: resolved afresh
    assert SERVED.origin == "codex-demo"
