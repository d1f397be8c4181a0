"""OperatorState.write_status: only the changed operator-owned fields, once, remembered until the
watch delivers an object at least as new; and the per-object record is dropped whole."""

from __future__ import annotations

import asyncio

from fake_kube import FakeKube, make_state, views

from codex_operator.status import RUN_OWNED_FIELDS
from codex_operator.sync_runs import run_key

KEY = run_key("team-a", "r")


def run(resource_version: str, **status):
    return {"apiVersion": "codex.dev/v1alpha1", "kind": "CodexTrainingRun",
            "metadata": {"name": "r", "namespace": "team-a", "uid": "u", "resourceVersion": resource_version},
            "spec": {}, "status": status}


def write(state, stored, computed):
    return asyncio.run(state.write_status(KEY, "CodexTrainingRun", {"namespace": "team-a", "name": "r"}, stored,
                                          computed, RUN_OWNED_FIELDS))


def test_an_unchanged_status_is_not_written():
    kube = FakeKube()
    state = make_state(kube, views())
    assert write(state, {"phase": "Running", "attempts": 1}, {"phase": "Running", "attempts": 1}) is False
    assert kube.calls == []


def test_only_the_changed_fields_are_patched_and_remembered_until_the_watch_catches_up():
    kube = FakeKube()
    kube.plant(run("5", phase="Pending", attempts=0))
    state = make_state(kube, views())
    assert write(state, {"phase": "Pending", "attempts": 0}, {"phase": "Running", "attempts": 0}) is True
    assert kube.calls == [("patch/status", "CodexTrainingRun", "r")]
    # The fake answers with resourceVersion "5": a watch event older than that still shows what was written.
    state.tracked[KEY].written.resource_version = 6
    assert state.stored_status(KEY, run("5", phase="Pending"))["phase"] == "Running"
    assert state.stored_status(KEY, run("6", phase="Running"))["phase"] == "Running"
    assert state.tracked[KEY].written is None  # caught up: forgotten


def test_forgetting_an_object_drops_its_record_and_its_gauges():
    state = make_state(FakeKube(), views())
    state.set_run_phase(KEY, "Running")
    state.set_job_active(KEY, True)
    assert (state.phase_counts["Running"], state.active_jobs) == (1, 1)
    state.forget(KEY)
    assert KEY not in state.tracked
    assert (state.phase_counts["Running"], state.active_jobs) == (0, 0)
    state.set_job_active(KEY, False)  # a Job event after its run is gone creates no record
    assert KEY not in state.tracked

