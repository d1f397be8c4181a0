"""The minImprovement gate (codex_api.gates): an adapter that does worse than its base model is refused;
with no base scored (no tasks) the gate is left out, not failed; and the status fields that carry the
comparison (Gate.base and delta, Metrics.basePassAtK and passAtKDelta)."""

from __future__ import annotations

import pytest

from codex_api.evaluation import Gate, Thresholds
from codex_api.gates import GATES, UNMEASURED, MetricGate, Threshold, describe
from codex_api.run_status import Metrics
from codex_trainer.baseline import IMPROVEMENT
from codex_trainer.gates import verdict

MIN_IMPROVEMENT = next(gate for gate in GATES if gate.name == "minImprovement")


def test_the_entry_is_an_optional_metric_gate_on_the_delta_the_recipe_measures():
    assert isinstance(MIN_IMPROVEMENT, MetricGate) and GATES[-1] is MIN_IMPROVEMENT
    assert (MIN_IMPROVEMENT.metric, MIN_IMPROVEMENT.bound, MIN_IMPROVEMENT.threshold.wire) == (
        IMPROVEMENT, "min", "minImprovement")
    assert Thresholds().min_improvement is None and "min_improvement" not in Thresholds().model_dump(exclude_none=True)
    assert Thresholds(min_improvement=-0.05).min_improvement == -0.05
    with pytest.raises(ValueError):
        Thresholds(min_improvement=1.5)


@pytest.mark.parametrize("threshold,improvement,expected", [
    (None, 0.12, None),
    (0.0, None, None),
    (0.0, 0.12, {"value": 0.12, "threshold": 0.0, "passed": True}),
    (0.0, 0.0, {"value": 0.0, "threshold": 0.0, "passed": True}),
    (0.0, -0.02, {"value": -0.02, "threshold": 0.0, "passed": False}),
    (-0.05, -0.02, {"value": -0.02, "threshold": -0.05, "passed": True}),
    (0.1, 0.0512345678, {"value": 0.051235, "threshold": 0.1, "passed": False}),
], ids=["unset-skips", "no-base-skips", "better", "no-regression", "regressed", "tolerated", "too-little"])
def test_verdict_on_the_improvement_over_the_base(threshold, improvement, expected):
    gates = verdict([], Thresholds(min_improvement=threshold), {IMPROVEMENT: improvement}).to_wire()
    assert gates.get("minImprovement") == expected
    assert gates["passed"] is (expected is None or expected["passed"])


def test_it_reads_as_a_signed_gain_in_the_status_message():
    assert MIN_IMPROVEMENT.reading({"value": 0.12, "threshold": 0.0, "passed": True}) == "minImprovement +0.12/0 ok"
    assert describe({"passed": False, "minImprovement": {"value": -0.0312, "threshold": 0.0, "passed": False}}) == (
        "minImprovement -0.0312/0 FAILED")


@pytest.mark.parametrize("skip,measured,expected", [
    (False, None, UNMEASURED["min"]),
    (True, None, None),
    (True, 0.25, 0.25),
], ids=["unmeasured-fails", "unmeasured-skipped", "measured"])
def test_skip_unmeasured_leaves_the_gate_out_instead_of_failing_it(skip, measured, expected):
    gate = MetricGate(name="gain", metric="gain", skip_unmeasured=skip, description="gain: adapter minus base.",
                      threshold=Threshold("minGain", 0.0, "minGain: the least gain."))
    assert gate.measure([], {"gain": measured}) == expected


def test_status_carries_base_and_delta_beside_each_value():
    gate = Gate(value=0.75, threshold=0.5, passed=True, base=0.5, delta=0.25)
    assert gate.to_wire() == {"value": 0.75, "threshold": 0.5, "passed": True, "base": 0.5, "delta": 0.25}
    assert Gate(value=3.2, threshold=5.0, passed=True).to_wire() == {"value": 3.2, "threshold": 5.0, "passed": True}
    metrics = Metrics(pass_at_k={"pass@1": 0.4}, base_pass_at_k={"pass@1": 0.3}, pass_at_k_delta={"pass@1": 0.1})
    assert metrics.to_wire() == {"passAtK": {"pass@1": 0.4}, "basePassAtK": {"pass@1": 0.3},
                                 "passAtKDelta": {"pass@1": 0.1}}
    assert Metrics(pass_at_k={"pass@1": 0.4}).to_wire() == {"passAtK": {"pass@1": 0.4}}
