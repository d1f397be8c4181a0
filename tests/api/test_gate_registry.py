"""The gate registry (codex_api.gates): what each kind of gate measures, how it judges and reads, what
register refuses, and that the Thresholds and Gates models are the registry's fields in its order."""

from __future__ import annotations

import pytest

from codex_api.evaluation import Gates, Thresholds
from codex_api.gates import GATES, UNMEASURED, MetricGate, SampleGate, Threshold, describe, register

from .gate_kit import outcome


def sample_gate(**overrides) -> SampleGate:
    values = {"name": "fastOk", "description": "fastOk: share that finish fast.",
              "threshold": Threshold("fastOk", 0.5, "fastOk: completions that finish fast."),
              "score": lambda o: o.elapsed < 1, **overrides}
    return SampleGate(**values)


def test_models_are_the_registry_in_its_order():
    assert [gate.name for gate in GATES] == ["syntaxOk", "logicOk", "securityOk", "perfOk", "perplexity",
                                               "minImprovement"]
    assert [field.alias for field in Thresholds.model_fields.values()] == [gate.threshold.wire for gate in GATES]
    assert [field.alias for field in Gates.model_fields.values()] == ["passed"] + [gate.name for gate in GATES]
    assert Thresholds().to_wire() == {"syntaxOk": 0.8, "logicOk": 0.8, "securityOk": 0.9, "perfOk": 0.6}
    assert Thresholds.model_fields["perf_ok"].description == (
        "perfOk: the least share of the completions that parse that run to completion within "
        "evaluation.timeoutSeconds; syntax errors count against syntaxOk only. Defaults to 0.6.")
    assert Thresholds.model_fields["max_perplexity"].description == (
        "maxPerplexity fails the run when validation perplexity is above it. Unset skips the check.")


@pytest.mark.parametrize("outcomes,expected", [
    ([], None),
    ([outcome(), outcome(elapsed=2.0), outcome(elapsed=3.0), outcome()], 0.5),
    ([outcome(elapsed=5.0), outcome(elapsed=2.0)], 0.0),
], ids=["no-tasks-skips", "share-of-all", "none-pass"])
def test_sample_gate_is_the_share_that_pass(outcomes, expected):
    assert sample_gate().measure(outcomes, {}) == expected


def test_sample_gate_counts_only_what_it_keeps():
    among_parsing = sample_gate(counts=lambda o: o.parses)
    outcomes = [outcome(parses=False, elapsed=0.0), outcome(), outcome(elapsed=2.0)]
    assert [among_parsing.scored(o) for o in outcomes] == [None, True, False]
    assert among_parsing.measure(outcomes, {}) == 0.5
    assert among_parsing.measure([outcome(parses=False)], {}) == 0.0


@pytest.mark.parametrize("bound,measured,threshold,value,passed", [
    ("max", 12.34567, 20.0, 12.3457, True),
    ("max", 25.0, 20.0, 25.0, False),
    ("max", None, 20.0, UNMEASURED["max"], False),
    ("min", 0.0, 0.0, 0.0, True),
    ("min", -0.01, 0.0, -0.01, False),
    ("min", None, 0.0, UNMEASURED["min"], False),
], ids=["max-below", "max-above", "max-unmeasured", "min-equal", "min-regressed", "min-unmeasured"])
def test_metric_gate_compares_its_measurement_with_a_bound(bound, measured, threshold, value, passed):
    gate = MetricGate(name="improvement", metric="improvement", bound=bound,
                      description="improvement: adapter minus base.",
                      threshold=Threshold("minImprovement", 0.0, "minImprovement: the least improvement."))
    assert gate.measure([], {"improvement": measured}) == value
    assert gate.judge(value, threshold) is passed


def test_describe_reads_each_measured_gate_in_registry_order():
    gates = {"passed": False, "perplexity": {"value": 25.5, "threshold": 20.0, "passed": False},
             "syntaxOk": {"value": 1.0, "threshold": 0.8, "passed": True}}
    assert describe(gates) == "syntaxOk 1/0.8 ok; perplexity 25.5/20 FAILED"
    assert describe({"passed": True}) == "all gates passed"
    assert describe({"passed": False}) == "gates not met"


@pytest.mark.parametrize("gate,error", [
    (sample_gate(name="syntaxOk", description="syntaxOk: again."), "is taken"),
    (sample_gate(threshold=Threshold("maxPerplexity", 0.5, "maxPerplexity: again.")), "is taken"),
    (sample_gate(name="passed", description="passed: the verdict's own field."), "is taken"),
    (sample_gate(description="share that finish fast."), "description of 'fastOk' must start with its name"),
    (sample_gate(threshold=Threshold("fastOk", None, "fastOk: completions that finish fast.")),
     "optional threshold 'fastOk' must say what unset means"),
], ids=["same-name", "same-threshold", "passed", "undocumented", "optional-without-unset"])
def test_register_refuses_what_would_break_the_models(gate, error):
    before = list(GATES)
    with pytest.raises(ValueError, match=error):
        register(gate)
    assert GATES == before
