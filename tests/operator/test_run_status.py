"""compute_run_status as a table: (job, pods, progress) in, phase/reason/conditions out."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone

import pytest
from op_examples import RUN_UID, example

from codex_operator import names
from codex_operator.builders.job import training_hashes
from codex_operator.conditions import find_condition
from codex_operator.config import OperatorConfig
from codex_operator.specs import RunView
from codex_operator.status import RUN_OWNED_FIELDS, compute_run_status, status_patch
from codex_operator.status import reasons

NOW = datetime(2026, 1, 1, 0, 10, tzinfo=timezone.utc)
JOB_UID = "job-uid-1"
REPORT_OK = {"phase": "Succeeded", "reason": "Succeeded", "message": "adapter saved to codex-artifacts:/codex-demo",
             "metrics": {"trainLoss": 1.2, "evalLoss": 1.4, "perplexity": 4.06, "passAtK": {"pass@1": 0.5}},
             "gates": {"passed": True, "syntaxOk": {"value": 1.0, "threshold": 0.5, "passed": True}},
             "artifact": {"claimName": "codex-artifacts", "path": "/codex-demo/adapter", "revision": "sha256:abc"},
             "lineage": {"datasetSha256": "d" * 64, "configHash": "c" * 64, "image": "codex-trainer:dev"}}
REPORT_GATES = {"phase": "Failed", "reason": "GatesNotMet", "message": "logicOk 0.10 < 0.80",
                "gates": {"passed": False, "logicOk": {"value": 0.1, "threshold": 0.8, "passed": False}},
                "metrics": {"evalLoss": 2.0}}
REPORT_PREEMPTED = {"phase": "Failed", "reason": "Preempted", "message": "SIGTERM at step 12; checkpoint saved"}


def status_of(run, job_, pods, now, **view_changes):
    """compute_run_status with the run's spec view, as the reconciler passes it (fields replaced on request)."""
    view = dataclasses.replace(RunView.of(run, OperatorConfig()).kept(), **view_changes)
    return compute_run_status(run, job_, pods, now, view)


def run_body(**status):
    run = example("run.yaml", "CodexTrainingRun")
    if status:
        run["status"] = status
    return run


def job(conditions=(), suspend=False, queued=False, **status):
    from codex_operator.builders.job import build_job  # the real annotations
    from codex_api import CodexTrainingRun, parse
    from codex_operator.config import OperatorConfig

    built = build_job(parse(CodexTrainingRun, run_body()), OperatorConfig())
    meta = {**built["metadata"], "uid": JOB_UID, "creationTimestamp": "2026-01-01T00:00:00Z"}
    if queued:
        meta["labels"] = {**meta["labels"], names.LABEL_KUEUE_QUEUE: "q"}
    return {"metadata": meta, "spec": {"suspend": suspend},
            "status": {"startTime": "2026-01-01T00:00:01Z", **status,
                       "conditions": [{"type": t, "status": "True", "reason": r, "message": m,
                                       "lastTransitionTime": "2026-01-01T00:05:00Z"} for t, r, m in conditions]}}


def pod(name, state, created="2026-01-01T00:00:02Z", exit_code=None, report=None, waiting=None):
    if state == "terminated":
        container_state = {"terminated": {"exitCode": exit_code, "message": json.dumps(report) if report else "",
                                          "finishedAt": "2026-01-01T00:06:00Z"}}
    elif state == "running":
        container_state = {"running": {"startedAt": created}}
    else:
        container_state = {"waiting": {"reason": waiting or "ContainerCreating"}}
    return {"metadata": {"name": name, "creationTimestamp": created, "annotations": {}},
            "status": {"phase": "Running", "containerStatuses": [{"name": "trainer", "state": container_state}]}}


CASES = [
    ("no-job-yet", run_body(), None, [], "Pending", reasons.CREATING, 0),
    ("suspended", run_body(), job(suspend=True), [], "Pending", reasons.SUSPENDED, 0),
    ("queued-in-kueue", run_body(), job(suspend=True, queued=True), [], "Pending", reasons.QUEUED, 0),
    ("pod-creating", run_body(), job(active=1), [pod("p1", "waiting")], "Pending", reasons.POD_PENDING, 0),
    ("training", run_body(), job(active=1), [pod("p1", "running")], "Running", reasons.TRAINING, 1),
    ("evaluating", run_body(phase="Running", progress={"stage": "evaluate", "percent": 100}), job(active=1),
     [pod("p1", "running")], "Evaluating", reasons.EVALUATING, 1),
    ("pushing", run_body(phase="Evaluating", progress={"stage": "push"}), job(active=1), [pod("p1", "running")],
     "Pushing", reasons.PUSHING, 1),
    ("retrying-after-preemption", run_body(), job(active=1, failed=1),
     [pod("p1", "terminated", exit_code=44, report=REPORT_PREEMPTED), pod("p2", "waiting", "2026-01-01T00:03:00Z")],
     "Pending", reasons.RETRYING, 1),
    ("second-attempt-running", run_body(), job(active=1, failed=1),
     [pod("p1", "terminated", exit_code=44, report=REPORT_PREEMPTED), pod("p2", "running", "2026-01-01T00:03:00Z")],
     "Running", reasons.TRAINING, 2),
    ("succeeded", run_body(), job([("Complete", "CompletionsReached", "")], succeeded=1,
                                  completionTime="2026-01-01T00:06:01Z"),
     [pod("p1", "terminated", exit_code=0, report=REPORT_OK)], "Succeeded", reasons.SUCCEEDED, 1),
    ("gates-not-met", run_body(), job([("Failed", "PodFailurePolicy", "Container trainer exited with 43")], failed=1),
     [pod("p1", "terminated", exit_code=43, report=REPORT_GATES)], "Failed", reasons.GATES_NOT_MET, 1),
    ("trainer-done-before-the-job-completes", run_body(), job(active=0),
     [pod("p1", "terminated", exit_code=0, report=REPORT_OK)], "Succeeded", reasons.SUCCEEDED, 1),
    ("gates-not-met-before-the-job-fails", run_body(), job(active=0),
     [pod("p1", "terminated", exit_code=43, report=REPORT_GATES)], "Failed", reasons.GATES_NOT_MET, 1),
    ("invalid-data-no-report", run_body(), job([("Failed", "PodFailurePolicy", "exit 42")], failed=1),
     [pod("p1", "terminated", exit_code=42)], "Failed", reasons.INVALID_DATA, 1),
    ("backoff-exhausted", run_body(), job([("Failed", "BackoffLimitExceeded", "Job has reached the backoff limit")],
                                          failed=3),
     [pod(f"p{i}", "terminated", f"2026-01-01T00:0{i}:00Z", exit_code=45) for i in (1, 2, 3)],
     "Failed", reasons.BACKOFF_LIMIT_EXCEEDED, 3),
    ("deadline", run_body(), job([("Failed", "DeadlineExceeded", "Job was active longer than specified")]), [],
     "Failed", reasons.DEADLINE_EXCEEDED, 0),
]


CASE = {case[0]: case for case in CASES}


@pytest.mark.parametrize("run,job_,pods,phase,reason,attempts", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_phase_reason_and_attempts(run, job_, pods, phase, reason, attempts):
    status = status_of(run, job_, pods, NOW)
    assert (status["phase"], find_condition(status["conditions"], "Ready")["reason"], status["attempts"]) == (
        phase, reason, attempts)
    ready = find_condition(status["conditions"], "Ready")["status"]
    assert ready == ("True" if phase == "Succeeded" else "False")
    progressing = find_condition(status["conditions"], "Progressing")["status"]
    assert progressing == ("False" if phase in ("Succeeded", "Failed") else "True")


def test_success_copies_the_report_into_status():
    status = status_of(run_body(), CASE['succeeded'][2], CASE['succeeded'][3], NOW)
    assert status["metrics"] == REPORT_OK["metrics"]
    assert status["gates"] == REPORT_OK["gates"] and status["artifact"] == REPORT_OK["artifact"]
    assert status["lineage"] == REPORT_OK["lineage"]
    assert (status["startTime"], status["completionTime"], status["durationSeconds"]) == (
        "2026-01-01T00:00:01Z", "2026-01-01T00:06:01Z", 360.0)
    assert status["jobName"] == "codex-demo-train"
    assert find_condition(status["conditions"], "GatesPassed")["status"] == "True"
    assert find_condition(status["conditions"], "SpecApplied")["reason"] == reasons.SPEC_APPLIED


def test_trainer_done_before_the_job_completes_has_its_times_already():
    status = status_of(run_body(), *CASE["trainer-done-before-the-job-completes"][2:4], NOW)
    assert (status["completionTime"], status["durationSeconds"]) == ("2026-01-01T00:06:00Z", 359.0)
    assert status["metrics"] == REPORT_OK["metrics"]


def test_gates_not_met_explains_which_gate():
    status = status_of(run_body(), CASE['gates-not-met'][2], CASE['gates-not-met'][3], NOW)
    gates = find_condition(status["conditions"], "GatesPassed")
    assert (gates["status"], gates["reason"]) == ("False", reasons.GATES_NOT_MET)
    assert "logicOk 0.1/0.8 FAILED" in gates["message"]
    assert status["message"] == "logicOk 0.10 < 0.80" and status["artifact"] is None


def test_invalid_spec_names_the_field_and_fails():
    run = run_body()
    run["spec"]["lora"]["r"] = 0
    status = status_of(run, None, [], NOW)
    ready = find_condition(status["conditions"], "Ready")
    assert (status["phase"], ready["status"], ready["reason"]) == ("Failed", "False", reasons.INVALID_SPEC)
    assert ready["message"].startswith("spec.lora.r: ")


def test_last_transition_time_moves_only_when_status_flips():
    first = status_of(run_body(), job(active=1), [pod("p1", "running")], NOW)
    later = datetime(2026, 1, 1, 0, 20, tzinfo=timezone.utc)
    again = status_of(run_body(**first), job(active=1), [pod("p1", "running")], later)
    assert again == first
    assert status_patch(first, again, RUN_OWNED_FIELDS) == {}
    done = status_of(run_body(**first), CASE['succeeded'][2], CASE['succeeded'][3], later)
    assert find_condition(done["conditions"], "Ready")["lastTransitionTime"] == "2026-01-01T00:20:00Z"
    assert status_patch(first, done, RUN_OWNED_FIELDS).keys() >= {"phase", "conditions", "metrics"}


def test_finished_run_keeps_status_after_its_job_is_deleted():
    done = status_of(run_body(), CASE['succeeded'][2], CASE['succeeded'][3], NOW)
    after_ttl = status_of(run_body(**done), None, [], NOW)
    assert status_patch(done, after_ttl, RUN_OWNED_FIELDS) == {}


def test_spec_changes_the_job_cannot_take_are_explained():
    changed = run_body()
    changed["spec"]["training"]["learningRate"] = 0.01
    applied = find_condition(status_of(changed, job(active=1), [pod("p1", "running")], NOW)["conditions"],
                             "SpecApplied")
    assert (applied["status"], applied["reason"]) == ("False", reasons.IMMUTABLE_FIELD_CHANGED)
    assert "spec.training" in applied["message"]
    moved = status_of(run_body(), job(active=1), [pod("p1", "running")], NOW, template_hash="other")
    applied = find_condition(moved["conditions"], "SpecApplied")
    assert (applied["status"], applied["reason"]) == ("False", reasons.POD_TEMPLATE_CHANGED)


def test_training_hashes_cover_exactly_the_immutable_fields():
    from codex_api import CodexTrainingRun, parse

    recorded = training_hashes(parse(CodexTrainingRun, run_body()).spec)
    assert [pair.split("=")[0] for pair in recorded.split(",")] == ["baseModel", "dataset", "method", "lora",
                                                                    "training"]


def test_exhausted_retries_say_how_the_last_attempt_ended():
    status = status_of(run_body(), CASE['backoff-exhausted'][2], CASE['backoff-exhausted'][3], NOW)
    assert status["message"] == "Job has reached the backoff limit; last attempt: trainer exited with code 45"
    tail = pod("p9", "terminated", "2026-01-01T00:09:00Z", exit_code=1)
    tail["status"]["containerStatuses"][0]["state"]["terminated"]["message"] = "Traceback ...\nMemoryError"
    status = status_of(run_body(), CASE['backoff-exhausted'][2], [tail], NOW)
    assert status["message"].endswith("last attempt: trainer exited with code 1: Traceback ... MemoryError")


def test_unreadable_termination_message_is_ignored():
    log_tail = pod("p1", "terminated", exit_code=0)
    log_tail["status"]["containerStatuses"][0]["state"]["terminated"]["message"] = "Traceback (most recent call..."
    status = status_of(run_body(), CASE['succeeded'][2], [log_tail], NOW)
    assert status["phase"] == "Succeeded" and status["metrics"] is None
    assert RUN_UID  # the example run keeps its uid
