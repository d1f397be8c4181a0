"""The real apiserver accepts our CRDs and every example, and refuses malformed objects naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from good_specs import DELETE, GOOD_MODEL, GOOD_RUN, with_changes

pytestmark = pytest.mark.cluster

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_FILES = sorted((REPO_ROOT / "crds").glob("*.yaml"))
# kustomization.yaml is not an object: it is applied with -k below.
EXAMPLES = sorted(p for p in (REPO_ROOT / "examples").glob("*.yaml") if p.name != "kustomization.yaml")

# (id, object, what the apiserver must say: the field path and the rule's message)
MALFORMED = [
    ("two-dataset-sources", with_changes(GOOD_RUN, {"spec.dataset.source.url": "https://example.com/d.jsonl"}),
     ["spec.dataset.source", "exactly one of hub, pvc, url or configMap must be set"]),
    ("lora-r-zero", with_changes(GOOD_RUN, {"spec.lora": {"r": 0}}),
     ["spec.lora.r", "should be greater than or equal to 1"]),
    ("threshold-above-one", with_changes(GOOD_RUN, {"spec.evaluation": {"thresholds": {"syntaxOk": 1.5}}}),
     ["spec.evaluation.thresholds.syntaxOk", "should be less than or equal to 1"]),
    ("validation-split-0.7", with_changes(GOOD_RUN, {"spec.dataset.validationSplit": 0.7}),
     ["spec.dataset.validationSplit", "should be less than 0.5"]),
    ("unknown-precision", with_changes(GOOD_RUN, {"spec.training": {"precision": "fp8"}}),
     ["spec.training.precision", 'Unsupported value: "fp8"']),
    ("inline-hub-token", with_changes(GOOD_RUN, {"spec.output.hub": {"repoId": "org/adapter", "token": "hf_x",
                                                             "tokenSecretRef": {"name": "hf"}}}),
     ['unknown field "spec.output.hub.token"']),
    ("dpo-with-prompt-completion", with_changes(GOOD_RUN, {"spec.method": "dpo"}),
     ["spec.method", "method dpo needs dataset.format preference"]),
    ("preference-data-with-sft", with_changes(GOOD_RUN, {"spec.dataset.format": "preference"}),
     ["spec.method", "preference data needs method dpo"]),
    ("two-base-models", with_changes(GOOD_RUN, {"spec.baseModel.hub": "Qwen/Qwen2.5-0.5B"}),
     ["spec.baseModel", "exactly one of hub, pvc or embedded must be set"]),
    ("k-above-samples", with_changes(GOOD_RUN, {"spec.evaluation": {"samplesPerTask": 2, "k": [1, 5]}}),
     ["spec.evaluation.k", "every k must be at most samplesPerTask"]),
    ("k-above-default-samples", with_changes(GOOD_RUN, {"spec.evaluation": {"k": [10]}}),
     ["spec.evaluation.k", "every k must be at most samplesPerTask"]),
    ("warmup-ratio-and-steps", with_changes(GOOD_RUN, {"spec.training": {"warmupRatio": 0.1, "warmupSteps": 5}}),
     ["spec.training.warmupSteps", "set warmupRatio or warmupSteps, not both"]),
    ("cpu-offload-data-parallel", with_changes(GOOD_RUN, {"spec.training": {"sharding": "none", "cpuOffload": True}}),
     ["spec.training.cpuOffload", "cpuOffload is FSDP's: it needs sharding fsdp or auto"]),
    ("unknown-sharding", with_changes(GOOD_RUN, {"spec.training.sharding": "zero3"}),
     ["spec.training.sharding", 'Unsupported value: "zero3"']),
    ("no-output", with_changes(GOOD_RUN, {"spec.output": {}}),
     ["spec.output", "set hub, pvc or both"]),
    ("checkpoint-claim-and-size", with_changes(GOOD_RUN, {"spec.checkpointing": {"claimName": "ck", "size": "1Gi"}}),
     ["spec.checkpointing", "set claimName (an existing PVC) or size"]),
    ("http-dataset-url", with_changes(GOOD_RUN, {"spec.dataset.source": {"url": "http://example.com/d.jsonl"}}),
     ["spec.dataset.source.url", "should match"]),
    ("min-above-max-replicas", with_changes(GOOD_MODEL, {"spec.autoscaling": {"minReplicas": 5, "maxReplicas": 2}}),
     ["spec.autoscaling.minReplicas", "minReplicas must not exceed maxReplicas"]),
    ("two-adapter-sources", with_changes(GOOD_MODEL, {"spec.adapter.hub": {"repoId": "org/adapter"}}),
     ["spec.adapter", "exactly one of hub, pvc or fromTrainingRun must be set"]),
    ("no-base-model", with_changes(GOOD_MODEL, {"spec.baseModel": DELETE}),
     ["spec.baseModel", "baseModel is required unless adapter.fromTrainingRun supplies it"]),
    ("negative-replicas", with_changes(GOOD_MODEL, {"spec.replicas": -1}),
     ["spec.replicas", "should be greater than or equal to 0"]),
    ("from-run-name-and-selector", with_changes(GOOD_MODEL, {"spec.adapter": {"fromTrainingRun": {
        "name": "r1", "selector": {"codex.dev/model": "m"}}}}),
     ["spec.adapter.fromTrainingRun", "exactly one of name or selector must be set"]),
    # Paths that leave their claim, credentials where a URL or a key name is expected, control characters.
    ("string-for-integer", with_changes(GOOD_RUN, {"spec.lora": {"r": "16"}}),
     ["spec.lora.r", "must be of type integer"]),
    ("integer-for-string", with_changes(GOOD_RUN, {"spec.resources": {"cpu": 4}}),
     ["spec.resources.cpu", "must be of type string"]),
    ("k-zero", with_changes(GOOD_RUN, {"spec.evaluation": {"samplesPerTask": 2, "k": [0]}}),
     ["spec.evaluation.k[0]", "should be greater than or equal to 1"]),
    ("checkpoint-size-zero", with_changes(GOOD_RUN, {"spec.checkpointing": {"size": "0Gi"}}),
     ["spec.checkpointing.size", "should match"]),
    ("node-selector-bad-key", with_changes(GOOD_RUN, {"spec.resources": {"nodeSelector": {"bad key": "x"}}}),
     ["spec.resources.nodeSelector", "every key must be a label key"]),
    ("selector-bad-value", with_changes(GOOD_MODEL, {"spec.adapter": {"fromTrainingRun": {"selector": {"m": "a b"}}}}),
     ["spec.adapter.fromTrainingRun.selector.m", "should match"]),
    ("merge-adapter-on-vllm", with_changes(GOOD_MODEL, {"spec": {
        "baseModel": {"hub": "org/base"}, "adapter": {"hub": {"repoId": "o/a"}}, "runtime": "vllm",
        "server": {"mergeAdapter": True}}}),
     ["spec.server.mergeAdapter", "mergeAdapter is not honoured by the vllm runtime"]),
    ("pvc-path-dotdot", with_changes(GOOD_RUN, {"spec.output.pvc": {"claimName": "a", "path": "/runs/../../etc"}}),
     ["spec.output.pvc.path", "path must stay inside the claim"]),
    ("pvc-path-newline", with_changes(GOOD_RUN, {"spec.output.pvc": {"claimName": "a", "path": "/runs\nx"}}),
     ["spec.output.pvc.path", "should match"]),
    ("url-with-userinfo", with_changes(GOOD_RUN, {"spec.dataset.source": {"url": "https://u:p@example.com/d.jsonl"}}),
     ["spec.dataset.source.url", "should match"]),
    ("token-as-secret-key", with_changes(GOOD_RUN, {"spec.baseModel.tokenSecretRef": {
        "name": "hf", "key": "hf_abcdefghijklmnopqrstuvwxyz012345"}}),
     ["spec.baseModel.tokenSecretRef.key", "key looks like a credential"]),
    ("configmap-key-with-slash", with_changes(GOOD_RUN, {"spec.dataset.source": {"configMap": {"name": "d", "key": "a/b"}}}),
     ["spec.dataset.source.configMap.key", "should match"]),
    ("vllm-without-gpu", with_changes(GOOD_MODEL, {"spec": {
        "baseModel": {"hub": "org/base"}, "adapter": {"hub": {"repoId": "o/a"}}, "runtime": "vllm"}}),
     ["spec.resources.gpus", "the vllm runtime needs at least one GPU"]),
    ("toleration-without-key-or-exists", with_changes(GOOD_RUN, {"spec.resources": {"tolerations": [{}]}}),
     ["spec.resources.tolerations[0].operator", "operator must be Exists when key is empty"]),
    ("gpu-resource-unqualified", with_changes(GOOD_RUN, {"spec.resources": {"gpuResourceName": "gpu"}}),
     ["spec.resources.gpuResourceName", "should match"]),
    ("gpu-resource-native", with_changes(GOOD_MODEL, {"spec.resources": {"gpuResourceName": "kubernetes.io/gpu"}}),
     ["spec.resources.gpuResourceName", "must be an extended resource"]),
    ("secret-key-dotdot", with_changes(GOOD_RUN, {"spec.baseModel.tokenSecretRef": {"name": "s", "key": ".."}}),
     ["spec.baseModel.tokenSecretRef.key", "should match"]),
    ("url-with-vertical-tab", with_changes(GOOD_RUN, {"spec.dataset.source": {"url": "https://example.com/a\x0bb"}}),
     ["spec.dataset.source.url", "should match"]),
    ("name-with-a-dot", with_changes(GOOD_MODEL, {"metadata.name": "model.v2"}),
     ["metadata.name", "a CodexModel name is lowercase letters, digits and '-', starting with a letter"]),
    ("model-revision-with-newline", with_changes(GOOD_MODEL, {"spec.adapter": {"hub": {"repoId": "o/a", "revision": "v1\n"}}}),
     ["spec.adapter.hub.revision", "should match"]),
]


@pytest.fixture(scope="module")
def crds(cluster):
    cluster.kubectl("apply", "--server-side", *[f"--filename={f}" for f in CRD_FILES])
    names = [doc["metadata"]["name"] for f in CRD_FILES for doc in yaml.safe_load_all(f.read_text()) if doc]
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{n}" for n in names])
    return names


@pytest.fixture(scope="module")
def crd_namespace(cluster, crds):
    with cluster.temporary_namespace("crd-tests") as name:
        yield name


def test_crds_are_established_with_names_accepted(cluster, crds):
    assert {"codextrainingruns.codex.dev", "codexmodels.codex.dev"} <= set(crds)
    for name in crds:
        conditions = {c["type"]: c["status"] for c in cluster.get_json(f"crd/{name}")["status"]["conditions"]}
        assert conditions["Established"] == "True" and conditions["NamesAccepted"] == "True", (name, conditions)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_example_is_accepted(cluster, crd_namespace, example):
    result = cluster.kubectl("apply", "--dry-run=server", "-n", crd_namespace, "-f", str(example), check=False)
    assert result.returncode == 0, result.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(example.read_text()) if doc]
    assert result.stdout.count("(server dry run)") == len(kinds), result.stdout


def test_examples_kustomization_is_accepted(cluster, crd_namespace):
    kustomization = REPO_ROOT / "examples" / "kustomization.yaml"
    if not kustomization.exists():
        pytest.skip("examples/ has no kustomization.yaml")
    result = cluster.kubectl("apply", "--dry-run=server", "-n", crd_namespace, "-k", str(kustomization.parent),
                             check=False)
    assert result.returncode == 0, result.stderr
    resources = yaml.safe_load(kustomization.read_text())["resources"]
    documents = [d for r in resources for d in yaml.safe_load_all((kustomization.parent / r).read_text()) if d]
    assert result.stdout.count("(server dry run)") == len(documents), result.stdout


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_object_is_refused_naming_the_field(cluster, crd_namespace, case):
    _, obj, expected = case
    result = cluster.kubectl("apply", "--dry-run=server", "-n", crd_namespace, "-f", "-",
                             input=json.dumps(obj), check=False)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    for fragment in expected:
        assert fragment in result.stderr, result.stderr


def test_changing_training_of_an_existing_run_is_refused(cluster, crd_namespace):
    run = with_changes(GOOD_RUN, {"metadata.name": "immutable-run", "spec.training": {"learningRate": 0.001}})
    cluster.kubectl("apply", "-n", crd_namespace, "-f", "-", input=json.dumps(run))
    changed = with_changes(run, {"spec.training": {"learningRate": 0.01}})
    result = cluster.kubectl("apply", "-n", crd_namespace, "-f", "-", input=json.dumps(changed), check=False)
    assert result.returncode != 0
    assert "spec.training" in result.stderr
    assert "spec.training is immutable once the run has started; create a new run instead" in result.stderr
    # Fields outside the immutable set still change.
    relabelled = with_changes(run, {"spec.job": {"backoffLimit": 1}})
    cluster.kubectl("apply", "-n", crd_namespace, "-f", "-", input=json.dumps(relabelled))
    stored = cluster.get_json("codextrainingrun/immutable-run", "-n", crd_namespace)
    assert stored["spec"]["job"] == {"backoffLimit": 1}
    assert stored["spec"]["training"] == {"learningRate": 0.001}
