"""A run with code tasks, stage by stage, against the recording fake client: which Job each
reconcile creates, what status says, and how each failure path ends (codex_api.stages)."""

from __future__ import annotations

import asyncio
import json

from fake_kube import FakeKube, make_state, views
from op_examples import RUN_UID, example

from codex_api import contract, stages
from codex_api.stages import SandboxReport
from codex_operator import names
from codex_operator.k8s import ApiError
from codex_operator.status import reasons
from codex_operator.sync_runs import reconcile_run, run_key

NS, NAME = "team-a", "codex-demo"
KEY = run_key(NS, NAME)
OWNER = {"apiVersion": "codex.dev/v1alpha1", "kind": "CodexTrainingRun", "name": NAME, "uid": RUN_UID,
         "controller": True}
TRAIN, SANDBOX, PUBLISH = (("Job", names.stage_job_name(NAME, s)) for s in stages.STAGES)
RESULTS = SandboxReport.of(["passed", "failed", "timeout"]).message()


def run_body(**status):
    body = example("run.yaml", "CodexTrainingRun")
    body["metadata"]["resourceVersion"] = "10"
    body["status"] = {"jobName": TRAIN[1], "observedGeneration": 1, "phase": "Running", **status}
    return body


def job(stage, condition=None, reason=""):
    meta = {"name": names.stage_job_name(NAME, stage), "namespace": NS, "uid": f"{stage}-uid",
            "creationTimestamp": "2026-01-01T00:00:00Z", "ownerReferences": [OWNER],
            "annotations": {names.ANNOTATION_STAGE: stage} if stage != stages.TRAIN else {}}
    conditions = [{"type": condition, "status": "True", "reason": reason, "message": f"{stage} {reason}".strip(),
                   "lastTransitionTime": "2026-01-01T00:05:00Z"}] if condition else []
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": {"completions": 1},
            "status": {"startTime": "2026-01-01T00:00:01Z", "conditions": conditions}}


def pod(stage, state, exit_code=0, message="", reason="Completed"):
    container = {"running": {"startedAt": "2026-01-01T00:01:00Z"}} if state == "running" else {
        "terminated": {"exitCode": exit_code, "message": message, "reason": reason,
                       "finishedAt": "2026-01-01T00:04:00Z"}}
    return {"metadata": {"name": f"{stage}-pod", "namespace": NS, "creationTimestamp": "2026-01-01T00:00:02Z",
                         "labels": {names.LABEL_TRAINING_RUN: NAME}, "annotations": {},
                         "ownerReferences": [{"kind": "Job", "name": "x", "uid": f"{stage}-uid", "controller": True}]},
            "status": {"containerStatuses": [{"name": "trainer", "state": container}]}}


TRAINED = json.dumps({"phase": "Succeeded", "reason": contract.REASON_TRAINED, "message": "trained; 3 programs",
                      "metrics": {"evalLoss": 1.5, "perplexity": 4.48}})


def reconcile(body, jobs, pods, logs=None):
    kube = FakeKube()
    kube.plant(body, *jobs)
    kube.logs.update(logs or {})
    state = make_state(kube, views(runs=[body], jobs=jobs, pods=pods))

    async def go():
        await reconcile_run(state, KEY)
        await asyncio.gather(*state.posting)
    asyncio.run(go())
    status = kube.store["CodexTrainingRun", NAME].get("status") or {}
    return kube, status, [c for c in kube.calls if c[1] != "Event"]


def stage_phases(status):
    return [(s["name"], s["phase"]) for s in status["stages"]]


def test_a_trained_run_gets_its_sandbox_job_and_shows_the_training_metrics():
    kube, status, calls = reconcile(run_body(), [job(stages.TRAIN, "Complete")],
                                    [pod(stages.TRAIN, "terminated", message=TRAINED)])
    assert ("create", *SANDBOX) in calls and not kube.has(*PUBLISH)
    assert (status["phase"], status["message"]) == ("Evaluating", "sandbox: waiting for the trainer pod to start")
    assert status["metrics"]["perplexity"] == 4.48
    pod_spec = kube.store[SANDBOX]["spec"]["template"]["spec"]
    assert pod_spec["automountServiceAccountToken"] is False and "serviceAccountName" not in pod_spec
    assert not any("secret" in json.dumps(v) for v in pod_spec["volumes"])
    assert not any("valueFrom" in e for e in pod_spec["containers"][0]["env"])


def test_a_running_sandbox_shows_how_many_programs_ran():
    progress = "\n".join(json.dumps({"event": stages.PROGRESS_EVENT, "done": d, "total": 9}) for d in (3, 6))
    _, status, calls = reconcile(run_body(), [job(stages.TRAIN, "Complete"), job(stages.SANDBOX)],
                                 [pod(stages.TRAIN, "terminated", message=TRAINED), pod(stages.SANDBOX, "running")],
                                 logs={"sandbox-pod": progress + "\nnot json\n"})
    assert ("get/log", "Pod", "sandbox-pod") in calls
    sandbox = status["stages"][1]
    assert (sandbox["phase"], sandbox["samplesDone"], sandbox["samplesTotal"]) == ("Running", 6, 9)
    assert status["message"] == "running the generated code in the sandbox: 6/9 programs run"


def test_a_finished_sandbox_hands_its_results_to_the_publish_job():
    kube, status, calls = reconcile(run_body(), [job(stages.TRAIN, "Complete"), job(stages.SANDBOX, "Complete")],
                                    [pod(stages.TRAIN, "terminated", message=TRAINED),
                                     pod(stages.SANDBOX, "terminated", message=RESULTS)])
    assert ("create", *PUBLISH) in calls
    env = {e["name"]: e for e in kube.store[PUBLISH]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env[stages.ENV_SANDBOX_RESULTS]["value"] == RESULTS
    assert status["phase"] == "Pushing"
    assert stage_phases(status) == [("train", "Succeeded"), ("sandbox", "Succeeded"), ("publish", "Pending")]


def test_a_sandbox_job_deleted_mid_way_is_created_again():
    kube, status, calls = reconcile(run_body(phase="Evaluating"), [job(stages.TRAIN, "Complete")],
                                    [pod(stages.TRAIN, "terminated", message=TRAINED)])
    assert ("create", *SANDBOX) in calls and status["phase"] == "Evaluating"


def test_a_finished_sandbox_whose_results_are_gone_runs_again():
    kube, _, calls = reconcile(run_body(phase="Evaluating"),
                               [job(stages.TRAIN, "Complete"), job(stages.SANDBOX, "Complete")],
                               [pod(stages.TRAIN, "terminated", message=TRAINED)])
    assert ("delete", *SANDBOX) in calls and not kube.has(*PUBLISH)


def test_an_oom_killed_sandbox_fails_the_run_saying_so():
    _, status, calls = reconcile(run_body(phase="Evaluating"),
                                 [job(stages.TRAIN, "Complete"), job(stages.SANDBOX, "Failed", "BackoffLimitExceeded")],
                                 [pod(stages.TRAIN, "terminated", message=TRAINED),
                                  pod(stages.SANDBOX, "terminated", exit_code=137, reason="OOMKilled")])
    assert not any(c[0] == "create" and c[1] == "Job" for c in calls)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (status["phase"], ready["reason"]) == ("Failed", reasons.SANDBOX_FAILED)
    assert "OOMKilled" in status["message"] and status["message"].startswith("the sandbox stage failed")
    assert stage_phases(status) == [("train", "Succeeded"), ("sandbox", "Failed"), ("publish", "Pending")]


def test_a_publish_that_fails_on_the_hub_ends_with_its_report():
    hub_down = json.dumps({"phase": "Failed", "reason": contract.REASON_TRANSIENT,
                           "message": "pushing to the Hub failed: 503 Service Unavailable"})
    _, status, _ = reconcile(run_body(phase="Pushing"),
                             [job(stages.TRAIN, "Complete"), job(stages.SANDBOX, "Complete"),
                              job(stages.PUBLISH, "Failed", "BackoffLimitExceeded")],
                             [pod(stages.TRAIN, "terminated", message=TRAINED),
                              pod(stages.SANDBOX, "terminated", message=RESULTS),
                              pod(stages.PUBLISH, "terminated", exit_code=contract.EXIT_TRANSIENT, message=hub_down)])
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (status["phase"], ready["reason"]) == ("Failed", reasons.BACKOFF_LIMIT_EXCEEDED)
    assert "503 Service Unavailable" in status["message"]
    assert stage_phases(status)[-1] == ("publish", "Failed")


def test_a_published_run_succeeds_with_the_publish_report():
    report = json.dumps({"phase": "Succeeded", "reason": "Succeeded", "message": "adapter published",
                         "metrics": {"perplexity": 4.48, "passAtK": {"pass@1": 0.5}},
                         "gates": {"passed": True}, "artifact": {"revision": "abc", "hubRepo": "o/r"}})
    kube, status, calls = reconcile(run_body(phase="Pushing"),
                                    [job(stages.TRAIN, "Complete"), job(stages.SANDBOX, "Complete"),
                                     job(stages.PUBLISH, "Complete")],
                                    [pod(stages.TRAIN, "terminated", message=TRAINED),
                                     pod(stages.SANDBOX, "terminated", message=RESULTS),
                                     pod(stages.PUBLISH, "terminated", message=report)])
    assert (status["phase"], status["metrics"]["passAtK"], status["artifact"]["hubRepo"]) == (
        "Succeeded", {"pass@1": 0.5}, "o/r")
    assert status["durationSeconds"] == 239.0  # from the training Job's start to the publish pod's end
    assert not any(c[0] in ("create", "delete") and c[1] == "Job" for c in calls)


def test_a_finished_run_whose_later_jobs_were_cleaned_up_starts_nothing():
    ended = run_body(phase="Succeeded", conditions=[{"type": "Ready", "status": "True", "reason": "Succeeded",
                                                     "message": "adapter published", "lastTransitionTime": "x"}])
    kube, status, calls = reconcile(ended, [job(stages.TRAIN, "Complete")],
                                    [pod(stages.TRAIN, "terminated", message=TRAINED)])
    assert not any(c[1] == "Job" for c in calls) and status["phase"] == "Succeeded"


def test_a_training_job_saving_its_hand_off_reads_as_evaluating_not_pushing():
    body = run_body(progress={"stage": "save"})
    _, status, _ = reconcile(body, [job(stages.TRAIN)], [pod(stages.TRAIN, "running")])
    assert (status["phase"], status["stages"][0]["phase"]) == ("Evaluating", "Running")


def test_a_sandbox_job_the_apiserver_refuses_is_invalid_spec_naming_the_field_and_not_retried():
    body, jobs = run_body(), [job(stages.TRAIN, "Complete")]
    pods = [pod(stages.TRAIN, "terminated", message=TRAINED)]
    kube = FakeKube()
    kube.plant(body, *jobs)
    kube.failures[("create", *SANDBOX)] = ApiError(
        422, "Invalid", 'Job.batch "codex-demo-sandbox" is invalid: spec.template.spec.runtimeClassName: '
                        'Invalid value: "gvisor!": a lowercase RFC 1123 subdomain')
    state = make_state(kube, views(runs=[body], jobs=jobs, pods=pods))
    asyncio.run(reconcile_run(state, KEY))
    status = kube.store["CodexTrainingRun", NAME]["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (status["phase"], ready["reason"], ready["message"].split(":")[0]) == (
        "Failed", reasons.INVALID_SPEC, "spec.evaluation.sandbox.runtimeClassName")
    assert kube.has(*TRAIN) and not kube.has(*SANDBOX)  # the trained adapter's Job stays
    kube.calls.clear()
    settled = {**kube.store["CodexTrainingRun", NAME]}
    settled["metadata"] = {**settled["metadata"], "resourceVersion": "11"}
    state.views = views(runs=[settled], jobs=jobs, pods=pods)
    asyncio.run(reconcile_run(state, KEY))
    assert [c for c in kube.calls if c[0] == "create"] == []  # this generation is not tried again
    fixed = {**settled, "metadata": {**settled["metadata"], "generation": 2, "resourceVersion": "12"}}
    state.views = views(runs=[fixed], jobs=jobs, pods=pods)
    asyncio.run(reconcile_run(state, KEY))  # the spec changed: the sandbox stage is taken up again
    assert kube.has(*SANDBOX)
    assert kube.store["CodexTrainingRun", NAME]["status"]["phase"] == "Evaluating"
