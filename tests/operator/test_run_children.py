"""What a run owns, and in which order it is created: the Job's path holds only what its pods
need; the Role and RoleBinding come after it, the binding after its Role."""

from __future__ import annotations

import copy

from codex_api import CodexTrainingRun, parse

from codex_operator.config import OperatorConfig
from codex_operator.sync_runs import all_children, build_run_children
from op_examples import example


def _kinds(chain):
    return [[child["kind"] for child in wave] for wave in chain]


def test_the_jobs_path_holds_what_its_pods_need_and_rbac_follows():
    run = parse(CodexTrainingRun, example("run-multinode.yaml", "CodexTrainingRun"))
    chains = build_run_children(run, OperatorConfig())
    assert list(chains) == ["job", "rbac"]  # applied in this order
    assert _kinds(chains["job"]) == [["ConfigMap", "ServiceAccount", "PersistentVolumeClaim", "Service"], ["Job"]]
    assert _kinds(chains["rbac"]) == [["Role"], ["RoleBinding"]]
    job = chains["job"][-1][0]
    account = chains["job"][0][1]
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
    names = [(c["kind"], c["metadata"]["name"]) for c in all_children(chains)]
    assert len(names) == len(set(names)) == 7


def test_a_user_named_account_gets_no_per_run_identity():
    body = copy.deepcopy(example("run.yaml", "CodexTrainingRun"))
    body["spec"].setdefault("job", {})["serviceAccountName"] = "team-trainer"
    chains = build_run_children(parse(CodexTrainingRun, body), OperatorConfig())
    assert _kinds(chains["rbac"]) == []
    assert "ServiceAccount" not in _kinds(chains["job"])[0]
    assert chains["job"][-1][0]["spec"]["template"]["spec"]["serviceAccountName"] == "team-trainer"
