"""The indexes keep slim, compacted copies: a run's status computed from them is the status computed
from the whole objects, for every case of the status table."""

from __future__ import annotations

import json
import sys

import pytest
from test_run_status import CASES, NOW, status_of

from codex_operator import names
from codex_operator.views import compact, slim_job, slim_pod


@pytest.mark.parametrize("run,job_,pods", [c[1:4] for c in CASES], ids=[c[0] for c in CASES])
def test_status_from_the_slim_copies_is_the_status_from_the_objects(run, job_, pods):
    whole = status_of(run, job_, pods, NOW)
    slim = status_of(run, slim_job(job_) if job_ else None, [slim_pod(p, names.TRAINER_CONTAINER) for p in pods], NOW)
    assert slim == whole


def test_a_pod_keeps_only_the_trainer_container_and_its_owner():
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"a": "b"}, "managedFields": [{}],
                        "annotations": {names.ANNOTATION_COMPLETION_INDEX: "1", "other": "x"},
                        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "ju",
                                             "controller": True, "blockOwnerDeletion": True}]},
           "status": {"phase": "Running", "conditions": [{"type": "Ready"}],
                      "containerStatuses": [{"name": "sidecar", "state": {}},
                                            {"name": names.TRAINER_CONTAINER, "image": "i", "state": {"running": {}},
                                             "lastState": {}}]}}
    assert slim_pod(pod, names.TRAINER_CONTAINER) == {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "uid": "u", "annotations": {names.ANNOTATION_COMPLETION_INDEX: "1"},
                     "ownerReferences": [{"kind": "Job", "name": "j", "uid": "ju", "controller": True}]},
        "status": {"containerStatuses": [{"name": names.TRAINER_CONTAINER, "state": {"running": {}},
                                          "lastState": {}}]}}


def test_compact_shares_keys_and_short_strings_and_keeps_the_value():
    first, second = (compact(json.loads('{"creationTimestamp": "2026-01-01T00:00:00Z", "n": [1, "x" ]}'))
                     for _ in range(2))
    assert first == second == {"creationTimestamp": "2026-01-01T00:00:00Z", "n": [1, "x"]}
    key_first, key_second = next(iter(first)), next(iter(second))
    assert key_first is key_second and first["creationTimestamp"] is second["creationTimestamp"]
    long = "y" * 200
    assert compact({"k": long})["k"] is long and sys.intern("k") is next(iter(compact({"k": 1})))
