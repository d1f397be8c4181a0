"""Names and labels: deterministic, valid DNS labels, and the same for builders and selectors."""

from __future__ import annotations

import re

import pytest

from codex_operator import names

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LONG = "a-very-long-training-run-name-that-goes-on-and-on-and-on-well-past-sixty-three-characters"

CASES = [
    ("short", "codex-demo", names.ROLE_JOB, "codex-demo-train"),
    ("long-is-hashed", LONG, names.ROLE_JOB, None),
]


@pytest.mark.parametrize("owner,role,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_child_name(owner, role, expected):
    name = names.child_name(owner, role)
    assert len(name) <= names.MAX_CHILD_NAME and DNS_LABEL.match(name) and name.endswith(f"-{role}")
    assert name == names.child_name(owner, role)  # deterministic: a restart finds the same child
    if expected:
        assert name == expected


def test_long_names_stay_distinct():
    assert names.child_name(LONG + "-x", "train") != names.child_name(LONG + "-y", "train")


def test_label_values_are_valid_and_selectors_match_labels():
    value = names.label_value(LONG + ".with.dots")
    assert len(value) <= 63 and LABEL_VALUE.match(value)
    labels = names.model_labels("codex-demo")
    assert names.model_selector("codex-demo").items() <= labels.items()
    assert {names.LABEL_MANAGED_BY: names.OPERATOR_NAME}.items() <= names.run_labels("r").items()
    assert names.MANAGED_SELECTOR == "app.kubernetes.io/managed-by=codex-operator"


def test_children_of_one_run():
    assert [names.spec_configmap_name("r"), names.checkpoint_pvc_name("r"), names.trainer_account_name("r"),
            names.job_name("r"), names.workers_service_name("r"), names.server_name("m")] == [
        "r-spec", "r-checkpoints", "r-trainer", "r-train", "r-workers", "m-server"]


def test_owner_lookups():
    job = {"metadata": {"ownerReferences": [{"kind": "CodexTrainingRun", "name": "r", "uid": "u", "controller": True}],
                        "annotations": {names.ANNOTATION_TRAINING_RUN: "r"}}}
    assert names.controller_owner(job, "CodexTrainingRun") == ("r", "u")
    assert names.controller_owner(job, "CodexModel") is None
    assert names.owner_run_name(job) == "r"
