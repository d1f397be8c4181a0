"""The Events the operator posts about runs and models."""

from __future__ import annotations

from datetime import datetime, timezone

from codex_operator.builders.event import MAX_MESSAGE, build_event

RUN = {"apiVersion": "codex.dev/v1alpha1", "kind": "CodexTrainingRun",
       "metadata": {"name": "r1", "namespace": "team", "uid": "u-1", "managedFields": [{"manager": "kubectl"}]}}
NOW = datetime(2026, 11, 21, 12, 0, 5, 123456, tzinfo=timezone.utc)


def test_an_event_names_its_object_and_reporter():
    event = build_event(RUN, "Normal", "Running", "Running: training", NOW, "codex-operator-7d9f")
    assert event["involvedObject"] == {"apiVersion": "codex.dev/v1alpha1", "kind": "CodexTrainingRun", "name": "r1",
                                       "namespace": "team", "uid": "u-1"}
    assert event["metadata"] == {"generateName": "r1.", "namespace": "team"}
    assert (event["type"], event["reason"], event["message"]) == ("Normal", "Running", "Running: training")
    assert event["source"] == {"component": "codex-operator"} and event["reportingInstance"] == "codex-operator-7d9f"
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2026-11-21T12:00:05Z"


def test_a_long_message_keeps_its_start_and_end_within_the_apiserver_limit():
    message = "start " + "x" * 5000 + " the end"
    short = build_event(RUN, "Warning", "Retrying", message, NOW, "op")["message"]
    assert len(short) == MAX_MESSAGE and short.startswith("start ") and short.endswith(" the end") and "..." in short
