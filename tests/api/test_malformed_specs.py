"""Malformed specs are refused by the models with a message naming the field path."""

from __future__ import annotations

import pytest

from codex_api import CodexModel, CodexTrainingRun, SpecError, check_transition, parse, parse_spec
from codex_api.training_run import CodexTrainingRunSpec
from good_specs import DELETE, GOOD_MODEL, GOOD_RUN, with_changes

RUN_CASES = [
    ("missing-base-model", "spec.baseModel", DELETE, "spec.baseModel: Field required"),
    ("two-dataset-sources", "spec.dataset.source.url", "https://example.com/d.jsonl",
     "spec.dataset.source: exactly one of hub, pvc, url or configMap must be set"),
    ("no-dataset-source", "spec.dataset.source", {}, "spec.dataset.source: exactly one of"),
    ("negative-learning-rate", "spec.training", {"learningRate": -0.001}, "spec.training.learningRate: Input should be greater than 0"),
    ("threshold-above-one", "spec.evaluation", {"thresholds": {"logicOk": 1.5}},
     "spec.evaluation.thresholds.logicOk: Input should be less than or equal to 1"),
    ("lora-rank-zero", "spec.lora", {"r": 0}, "spec.lora.r: Input should be greater than or equal to 1"),
    ("unknown-precision", "spec.training", {"precision": "fp8"}, "spec.training.precision: Input should be 'bf16', 'fp16' or 'fp32'"),
    ("inline-hub-token", "spec.output.hub", {"repoId": "org/m", "token": "hf_secret", "tokenSecretRef": {"name": "t"}},
     "spec.output.hub: token: credentials are never given inline"),
    ("hub-without-secret-ref", "spec.output.hub", {"repoId": "org/m"}, "spec.output.hub.tokenSecretRef: Field required"),
    ("validation-split-too-big", "spec.dataset.validationSplit", 0.7,
     "spec.dataset.validationSplit: Input should be less than 0.5"),
    ("validation-split-zero", "spec.dataset.validationSplit", 0, "spec.dataset.validationSplit: Input should be greater than 0"),
    ("dpo-with-sft-data", "spec.method", "dpo", "spec.method: method dpo needs dataset.format preference"),
    ("unknown-field", "spec.lora", {"rank": 8}, "spec.lora.rank: Extra inputs are not permitted"),
    ("two-base-models", "spec.baseModel", {"embedded": "tiny-llama", "hub": "org/model"},
     "spec.baseModel: exactly one of hub, pvc or embedded must be set"),
    ("revision-without-hub", "spec.baseModel", {"embedded": "tiny-llama", "revision": "v1"},
     "spec.baseModel.revision: revision applies only to a hub model"),
    ("unknown-embedded-model", "spec.baseModel", {"embedded": "gpt-5"}, "spec.baseModel.embedded: Input should be"),
    ("k-above-samples", "spec.evaluation", {"samplesPerTask": 2, "k": [1, 5]},
     "spec.evaluation.k: every k must be at most samplesPerTask"),
    ("no-output", "spec.output", {}, "spec.output: set hub, pvc or both"),
    ("checkpoint-claim-and-size", "spec.checkpointing", {"claimName": "c", "size": "1Gi"},
     "spec.checkpointing: set claimName (an existing PVC) or size"),
    ("bad-quantity", "spec.resources", {"memory": "lots"}, "spec.resources.memory: String should match pattern"),
    ("http-url", "spec.dataset.source", {"url": "http://example.com/d.jsonl"}, "spec.dataset.source.url: String should match"),
    ("warmup-both", "spec.training", {"warmupRatio": 0.1, "warmupSteps": 10}, "spec.training.warmupSteps: set warmupRatio or warmupSteps, not both"),
    ("zero-batch", "spec.training", {"perDeviceBatchSize": 0}, "spec.training.perDeviceBatchSize: Input should be greater than or equal to 1"),
    ("bad-toleration", "spec.resources", {"tolerations": [{"operator": "Maybe"}]},
     "spec.resources.tolerations[0].operator: Input should be 'Exists' or 'Equal'"),
    ("relative-pvc-path", "spec.output.pvc", {"claimName": "a", "path": "relative/dir"}, "spec.output.pvc.path: String should match"),
    # Paths that would leave their volume, or carry control characters.
    ("pvc-path-dotdot", "spec.output.pvc", {"claimName": "a", "path": "/runs/../../etc"},
     "spec.output.pvc.path: path must stay inside the claim"),
    ("pvc-path-ends-dotdot", "spec.dataset.source", {"pvc": {"claimName": "a", "path": "/data/.."}},
     "spec.dataset.source.pvc.path: path must stay inside the claim"),
    ("pvc-path-newline", "spec.output.pvc", {"claimName": "a", "path": "/runs\nx"}, "spec.output.pvc.path: String should match"),
    ("pvc-path-nul", "spec.output.pvc", {"claimName": "a", "path": "/runs\x00"}, "spec.output.pvc.path: String should match"),
    ("pvc-path-unbounded", "spec.output.pvc", {"claimName": "a", "path": "/" + "a" * 2000},
     "spec.output.pvc.path: String should have at most 1024 characters"),
    # Credentials where a URL or a key name is expected.
    ("url-with-userinfo", "spec.dataset.source", {"url": "https://user:pass@example.com/d.jsonl"},
     "spec.dataset.source.url: String should match"),
    ("url-with-user", "spec.dataset.source", {"url": "https://token@example.com/d.jsonl"},
     "spec.dataset.source.url: String should match"),
    ("token-as-secret-key", "spec.baseModel", {"embedded": "tiny-llama", "tokenSecretRef": {
        "name": "hf", "key": "hf_abcdefghijklmnopqrstuvwxyz012345"}}, "spec.baseModel.tokenSecretRef.key: key looks like a credential"),
    ("token-as-configmap-key", "spec.dataset.source", {"configMap": {"name": "d", "key": "ghp_abcdefghijklmnop1234"}},
     "spec.dataset.source.configMap.key: key looks like a credential"),
    # Keys and revisions in Kubernetes' and git's own character classes.
    ("empty-configmap-key", "spec.dataset.source", {"configMap": {"name": "d", "key": ""}},
     "spec.dataset.source.configMap.key: String should have at least 1 character"),
    ("configmap-key-with-slash", "spec.dataset.source", {"configMap": {"name": "d", "key": "a/b"}},
     "spec.dataset.source.configMap.key: String should match"),
    ("secret-key-with-space", "spec.output.hub", {"repoId": "org/m", "tokenSecretRef": {"name": "t", "key": "my key"}},
     "spec.output.hub.tokenSecretRef.key: String should match"),
    ("revision-with-newline", "spec.baseModel", {"hub": "org/m", "revision": "main\n"}, "spec.baseModel.revision: String should match"),
    # Empty or zero values that mean nothing, and what only a child object's validation would refuse.
    ("k-zero", "spec.evaluation", {"samplesPerTask": 2, "k": [0]}, "spec.evaluation.k[0]: Input should be greater than or equal to 1"),
    ("checkpoint-size-zero", "spec.checkpointing", {"size": "0Gi"}, "spec.checkpointing.size: String should match"),
    ("cpu-zero", "spec.resources", {"cpu": "0"}, "spec.resources.cpu: String should match"),
    ("empty-pull-secret", "spec.job", {"imagePullSecrets": [""]}, "spec.job.imagePullSecrets[0]: String should match"),
    ("empty-target-module", "spec.lora", {"targetModules": [""]}, "spec.lora.targetModules[0]: String should match"),
    ("node-selector-bad-key", "spec.resources", {"nodeSelector": {"bad key": "x"}},
     "spec.resources.nodeSelector: nodeSelector: every key must be a label key"),
    ("node-selector-long-value", "spec.resources", {"nodeSelector": {"zone": "a" * 64}},
     "spec.resources.nodeSelector.zone: String should have at most 63 characters"),
    ("node-selector-long-key-name", "spec.resources", {"nodeSelector": {"example.com/" + "k" * 64: "v"}},
     "spec.resources.nodeSelector: nodeSelector: every key must be a label key"),
    ("image-with-newline", "spec.job", {"image": "repo/trainer:1\nx"}, "spec.job.image: String should match"),
    ("toleration-bad-key", "spec.resources", {"tolerations": [{"key": "a b", "operator": "Exists"}]},
     "spec.resources.tolerations[0].key: String should match"),
    ("queue-name-bad", "spec.job", {"queueName": "team queue"}, "spec.job.queueName: String should match"),
    ("branch-with-space", "spec.output.hub", {"repoId": "org/m", "branch": "my branch", "tokenSecretRef": {"name": "t"}},
     "spec.output.hub.branch: String should match"),
    # No lax coercion: the schema's types, as the apiserver reads them.
    ("string-for-integer", "spec.lora", {"r": "16"}, "spec.lora.r: Input should be a valid integer"),
    ("string-for-number", "spec.training", {"learningRate": "0.0002"}, "spec.training.learningRate: Input should be a valid number"),
    ("string-for-boolean", "spec.baseModel", {"embedded": "tiny-llama", "trustRemoteCode": "false"},
     "spec.baseModel.trustRemoteCode: Input should be a valid boolean"),
    ("float-for-integer", "spec.training", {"maxSteps": 10.5}, "spec.training.maxSteps: Input should be a valid integer"),
    ("integer-for-string", "spec.resources", {"cpu": 4}, "spec.resources.cpu: Input should be a valid string"),
    ("revision-with-nul", "spec.dataset.source", {"hub": "org/d", "hubRevision": "v1\x00"},
     "spec.dataset.source.hubRevision: String should match"),
]

MODEL_CASES = [
    ("two-adapter-sources", "spec.adapter", {"hub": {"repoId": "o/a"}, "pvc": {"claimName": "x"}},
     "spec.adapter: exactly one of hub, pvc or fromTrainingRun must be set"),
    ("min-above-max", "spec.autoscaling", {"minReplicas": 5, "maxReplicas": 2}, "spec.autoscaling.minReplicas: minReplicas must not exceed maxReplicas"),
    ("inline-api-key", "spec.server", {"apiKey": "sk-123"}, "spec.server: apiKey: credentials are never given inline"),
    ("no-base-model-for-pvc", "spec.baseModel", DELETE, "spec.baseModel: baseModel is required unless adapter.fromTrainingRun"),
    ("vllm-embedded", "spec.runtime", "vllm", "spec.runtime: the vllm runtime cannot load an embedded model"),
    ("from-run-name-and-selector", "spec.adapter", {"fromTrainingRun": {"name": "a", "selector": {"x": "y"}}},
     "spec.adapter.fromTrainingRun: exactly one of name or selector must be set"),
    ("selector-bad-value", "spec.adapter", {"fromTrainingRun": {"selector": {"codex.dev/model": "a b"}}},
     "spec.adapter.fromTrainingRun.selector.codex.dev/model: String should match"),
    ("model-memory-zero", "spec.resources", {"memory": "0"}, "spec.resources.memory: String should match"),
    ("model-node-selector-bad-key", "spec.resources", {"nodeSelector": {"-x": "y"}},
     "spec.resources.nodeSelector: nodeSelector: every key must be a label key"),
    ("merge-adapter-on-vllm", "spec", {"baseModel": {"hub": "org/base"}, "adapter": {"hub": {"repoId": "o/a"}},
                                       "runtime": "vllm", "resources": {"gpus": 1}, "server": {"mergeAdapter": True}},
     "spec.server.mergeAdapter: mergeAdapter is not honoured by the vllm runtime"),
    ("mask-secrets-on-vllm", "spec", {"baseModel": {"hub": "org/base"}, "adapter": {"hub": {"repoId": "o/a"}},
                                      "runtime": "vllm", "resources": {"gpus": 1}, "server": {"maskSecrets": False}},
     "spec.server.maskSecrets: maskSecrets is not honoured by the vllm runtime"),
    ("bad-service-type", "spec.service", {"type": "Ingress"}, "spec.service.type: Input should be"),
    ("vllm-without-gpu", "spec", {"baseModel": {"hub": "org/base"}, "adapter": {"hub": {"repoId": "o/a"}},
                                  "runtime": "vllm"},
     "spec.resources.gpus: the vllm runtime needs at least one GPU"),
    # An integral float passes as an integer, except where a CEL rule reads it (the apiserver's CEL fails).
    ("float-read-by-a-rule", "spec.autoscaling", {"minReplicas": 1, "maxReplicas": 2.0},
     "spec.autoscaling: maxReplicas must be an integer, not 2.0: a validation rule reads it"),
    ("no-name", "metadata", {}, "metadata.name: name or generateName is required"),
    ("name-with-newline", "metadata", {"name": "m\n"}, "metadata.name: name 'm\\n' is not a valid DNS-1123"),
    ("name-too-long", "metadata", {"name": "m" * 254}, "metadata.name: String should have at most 253 characters"),
]


# (kind, the good object it breaks, path, value, message), one row a case; ids "run-..." / "model-..."
MALFORMED = ([(CodexTrainingRun, GOOD_RUN, *case[1:]) for case in RUN_CASES]
             + [(CodexModel, GOOD_MODEL, *case[1:]) for case in MODEL_CASES])
MALFORMED_IDS = [f"run-{case[0]}" for case in RUN_CASES] + [f"model-{case[0]}" for case in MODEL_CASES]


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
