"""Malformed specs are refused by the models with a message naming the field path."""

from __future__ import annotations

import pytest

from codex_api import CodexModel, CodexTrainingRun, SpecError, check_transition, parse, parse_spec
from codex_api.training_run import CodexTrainingRunSpec
from good_specs import GOOD_MODEL, GOOD_RUN, with_changes
from malformed_cases import MALFORMED, MALFORMED_IDS, MODEL_CASES, RUN_CASES


@pytest.mark.parametrize(("kind", "good", "path", "value", "message"), MALFORMED, ids=MALFORMED_IDS)
def test_malformed_object_is_refused_naming_the_field(kind, good, path, value, message):
    with pytest.raises(SpecError) as info:
        parse(kind, with_changes(good, {path: value}))
    assert any(problem.startswith(message) for problem in info.value.problems), info.value.problems


def test_good_objects_parse_with_documented_defaults():
    run = parse(CodexTrainingRun, GOOD_RUN)
    assert run.spec.method == "sft"
    assert run.spec.lora.r == 16 and run.spec.lora.target_modules == ["all-linear"]
    assert run.spec.training.precision == "bf16"
    assert run.spec.dataset.validation_split == 0.1
    assert run.spec.evaluation.thresholds.to_wire() == {"syntaxOk": 0.8, "logicOk": 0.8, "securityOk": 0.9, "perfOk": 0.6}
    model = parse(CodexModel, GOOD_MODEL)
    assert model.spec.server.mask_secrets is True and model.spec.runtime == "builtin"


# (a change to the good run, what the models make of it: the value it is read as, or the refusal)
AS_THE_APISERVER_READS = [
    ("null-field-is-absent", {"spec.lora": {"r": None}}, ("spec.lora.r", 16)),
    ("null-object-is-absent", {"spec.lora": None}, ("spec.lora.r", 16)),
    ("null-map-value-is-absent", {"spec.resources": {"nodeSelector": {"a": None, "b": "c"}}},
     ("spec.resources.nodeSelector", {"b": "c"})),
    ("integral-float-is-an-integer", {"spec.lora": {"r": 8.0}}, ("spec.lora.r", 8)),
    ("float-past-2**53-is-not", {"spec.training": {"seed": 2.0 ** 53}}, "spec.training.seed: Input should be a valid integer"),
    ("integer-past-int64-is-not", {"spec.training": {"seed": 10 ** 20}}, "spec.training.seed: Input should be a valid integer"),
    ("fractional-float-is-not", {"spec.lora": {"r": 8.5}}, "spec.lora.r: Input should be a valid integer"),
    ("null-list-item-is-refused", {"spec.lora": {"targetModules": [None]}}, "spec.lora.targetModules[0]: Input should be"),
    ("null-unknown-field-is-refused", {"spec.lora": {"rank": None}}, "spec.lora.rank: Extra inputs are not permitted"),
]


@pytest.mark.parametrize(("changes", "expected"), [c[1:] for c in AS_THE_APISERVER_READS],
                         ids=[c[0] for c in AS_THE_APISERVER_READS])
def test_the_models_read_a_spec_as_the_apiserver_does(changes, expected):
    obj = with_changes(GOOD_RUN, changes)
    if isinstance(expected, str):
        with pytest.raises(SpecError) as info:
            parse(CodexTrainingRun, obj)
        assert any(problem.startswith(expected) for problem in info.value.problems), info.value.problems
        return
    path, value = expected
    node = parse(CodexTrainingRun, obj).to_wire()
    for part in path.split("."):
        node = node[part]
    assert node == value


def test_parse_spec_prefixes_spec():
    with pytest.raises(SpecError) as info:
        parse_spec(CodexTrainingRunSpec, {**GOOD_RUN["spec"], "lora": {"r": 0}})
    assert info.value.problems == ["spec.lora.r: Input should be greater than or equal to 1"]


@pytest.mark.parametrize("field", ["baseModel", "dataset", "method", "lora", "training"])
def test_training_fields_are_immutable(field):
    old = parse(CodexTrainingRun, GOOD_RUN).spec
    changes = {
        "baseModel": {"embedded": "smollm2-135m-instruct"},
        "dataset": {"source": {"configMap": {"name": "data", "key": "other.jsonl"}}},
        "method": "dpo",
        "lora": {"r": 4},
        "training": {"learningRate": 0.1},
    }
    new_spec = {**GOOD_RUN["spec"], field: changes[field]}
    if field == "method":
        new_spec["dataset"] = {"source": GOOD_RUN["spec"]["dataset"]["source"], "format": "preference"}
    new = parse_spec(CodexTrainingRunSpec, new_spec)
    messages = check_transition(new, old)
    assert f"spec.{field} is immutable once the run has started; create a new run instead" in messages


def test_other_fields_may_change():
    old = parse(CodexTrainingRun, GOOD_RUN).spec
    new = parse_spec(CodexTrainingRunSpec, {**GOOD_RUN["spec"], "job": {"backoffLimit": 7}, "resources": {"cpu": "4"}})
    assert check_transition(new, old) == []


def test_at_least_fifteen_malformed_cases():
    assert len(RUN_CASES) + len(MODEL_CASES) >= 15
