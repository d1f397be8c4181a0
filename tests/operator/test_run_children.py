"""What a run owns, and in which order it is created: the Job's path holds only what its pods
need; the Role and RoleBinding come after it, the binding after its Role; and when a
reconcile creates them (again)."""

from __future__ import annotations

import copy

from codex_api import CodexTrainingRun, parse

from codex_operator.config import OperatorConfig
from codex_operator.sync_runs import all_children, build_run_children, needs_children
from op_examples import example


def _kinds(chain):
    return [[child["kind"] for child in wave] for wave in chain]


def test_the_jobs_path_holds_what_its_pods_need_and_rbac_follows():
    run = parse(CodexTrainingRun, example("run-multinode.yaml", "CodexTrainingRun"))
    chains = build_run_children(run, OperatorConfig())
    assert list(chains) == ["job", "rbac"]  # applied in this order
    assert _kinds(chains["job"]) == [["ConfigMap", "ServiceAccount", "PersistentVolumeClaim", "Service",
                                      "PersistentVolumeClaim", "NetworkPolicy"], ["Job"]]
    assert _kinds(chains["rbac"]) == [["Role"], ["RoleBinding"]]
    job = chains["job"][-1][0]
    account = chains["job"][0][1]
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
    names = [(c["kind"], c["metadata"]["name"]) for c in all_children(chains)]
    assert len(names) == len(set(names)) == 9


def test_a_user_named_account_gets_no_per_run_identity():
    body = copy.deepcopy(example("run.yaml", "CodexTrainingRun"))
    body["spec"].setdefault("job", {})["serviceAccountName"] = "team-trainer"
    chains = build_run_children(parse(CodexTrainingRun, body), OperatorConfig())
    assert _kinds(chains["rbac"]) == []
    assert "ServiceAccount" not in _kinds(chains["job"])[0]
    assert chains["job"][-1][0]["spec"]["template"]["spec"]["serviceAccountName"] == "team-trainer"


def _status(phase=None, reason=None, job_name=None):
    conditions = [{"type": "Ready", "status": "False", "reason": reason}] if reason else []
    return {"phase": phase, "conditions": conditions, "jobName": job_name}


def test_children_are_created_until_status_names_the_job_and_never_after_the_end():
    job = {"metadata": {"name": "r-train"}}
    assert needs_children(None, _status())  # a new run
    assert needs_children(job, _status("Pending", "Creating"))  # created, but the RBAC chain was cut short
    assert not needs_children(job, _status("Running", "Running", "r-train"))
    assert needs_children(None, _status("Running", "Running", "r-train"))  # its Job was deleted mid-run
    assert not needs_children(None, _status("Succeeded", "Succeeded", "r-train"))  # Job gone by its TTL
    assert not needs_children(None, _status("Failed", "GatesNotMet", "r-train"))
    assert needs_children(None, _status("Failed", "InvalidSpec"))  # the spec was fixed since
