"""Every builder's output against golden YAML (UPDATE_GOLDEN=1 regenerates), plus the properties that matter."""

from __future__ import annotations

import copy

import pytest
import yaml
from codex_api import CodexModel, CodexTrainingRun, contract, parse, paths, stages
from codex_api.stages import SandboxReport

from codex_operator import names
from codex_operator.builders.common import object_hash
from codex_operator.builders.configmap import SPEC_KEY, build_spec_configmap
from codex_operator.builders.deployment import build_deployment
from codex_operator.builders.job import build_job, desired_pod_template_hash, job_mutable_fields
from codex_operator.builders.operator_install import build_operator_deployment
from codex_operator.builders.pvc import build_checkpoint_pvc
from codex_operator.builders.rbac import build_trainer_rbac
from codex_operator.builders.service import build_workers_service
from codex_operator.builders.stages import (build_publish_job, build_sandbox_job, build_sandbox_network_policy,
                                            build_work_pvc)
from codex_operator.builders.serving import build_hpa, build_service, endpoint
from codex_operator.config import OperatorConfig, Resources
from codex_operator.promotion import resolve
from codex_operator.rbac_rules import build_operator_rbac

from op_examples import example

CFG = OperatorConfig(trainer_image="registry.example/codex-trainer:1.0",
                     trainer_resources=Resources("4", "16Gi"))
EXAMPLE_RUNS = ["run.yaml", "run-multinode.yaml", "run-hub-push.yaml", "run-dpo.yaml", "run-codellama-70b.yaml"]


def run_of(filename: str) -> CodexTrainingRun:
    return parse(CodexTrainingRun, example(filename, "CodexTrainingRun"))


@pytest.mark.parametrize("filename", EXAMPLE_RUNS, ids=[f.removesuffix(".yaml") for f in EXAMPLE_RUNS])
def test_run_children_match_golden(filename, golden):
    run = run_of(filename)
    stem = filename.removesuffix(".yaml")
    golden(f"{stem}.job", build_job(run, CFG))
    golden(f"{stem}.configmap", build_spec_configmap(run))
    golden(f"{stem}.rbac", build_trainer_rbac(run))
    golden(f"{stem}.pvc", build_checkpoint_pvc(run))
    golden(f"{stem}.workers-service", build_workers_service(run))
    if stages.is_staged(run.spec):
        golden(f"{stem}.stages", [build_work_pvc(run), build_sandbox_network_policy(run), build_sandbox_job(run, CFG),
                                  build_publish_job(run, CFG, SandboxReport.of(["passed", "failed"]).message())])


def test_job_is_restricted_and_carries_the_exit_code_contract():
    job = build_job(run_of("run.yaml"), CFG)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["seccompProfile"] == {
        "type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {str(paths.SPEC_DIR), str(paths.CHECKPOINT_DIR), str(paths.SCRATCH_DIR), str(paths.HF_HOME), "/tmp",
            str(paths.configmap_dir("codex-sample-data")), str(paths.pvc_dir("codex-artifacts"))} <= mounts
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "In",
                                                             "values": [contract.EXIT_INVALID,
                                                                        contract.EXIT_GATES_NOT_MET]}}
    assert rules[1]["action"] == "Ignore" and rules[1]["onPodConditions"][0]["type"] == "DisruptionTarget"
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is True
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert job["spec"]["backoffLimit"] == 2 and job["spec"]["activeDeadlineSeconds"] == 3600
    assert container["resources"] == {"limits": {"cpu": "2", "memory": "6Gi"}, "requests": {"cpu": "2", "memory": "6Gi"}}


def test_the_handoffs_70b_job_asks_for_4_gpus_and_launches_fsdp_under_torchrun():
    job = build_job(run_of("run-codellama-70b.yaml"), CFG)
    spec, container = job["spec"], job["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert (env["NNODES"], env["NPROC_PER_NODE"]) == ("1", "4")
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert "completionMode" not in spec and "MASTER_ADDR" not in env  # one pod: torchrun --standalone
    configured = build_job(run_of("run-codellama-70b.yaml"), OperatorConfig(trainer_gpu_memory_gib=80))
    configured_env = {item["name"]: item.get("value") for item in
                      configured["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert configured_env[paths.ENV_GPU_MEMORY_GIB] == "80" and paths.ENV_GPU_MEMORY_GIB not in env


def test_multinode_job_is_indexed_with_torchrun_env():
    job = build_job(run_of("run-multinode.yaml"), CFG)
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    assert spec["suspend"] is True and job["metadata"]["labels"][names.LABEL_KUEUE_QUEUE] == "gpu-queue"
    pod = spec["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["MASTER_ADDR"]["value"] == "codex-7b-multinode-train-0.codex-7b-multinode-workers"
    assert env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"].endswith("['batch.kubernetes.io/job-completion-index']")
    assert (env["NNODES"]["value"], env["NPROC_PER_NODE"]["value"], env["MASTER_PORT"]["value"]) == ("2", "8", "29500")
    assert pod["subdomain"] == "codex-7b-multinode-workers"
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def _env(job):
    return {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_hub_token_is_a_secret_reference_only_held_by_the_stage_that_pushes():
    run = run_of("run-hub-push.yaml")
    token = {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}
    assert _env(build_publish_job(run, CFG, "{}"))["HF_TOKEN"] == token
    # A run with code tasks trains with the base model's read token (none here) and runs the code with none.
    assert "HF_TOKEN" not in _env(build_job(run, CFG)) and "HF_TOKEN" not in _env(build_sandbox_job(run, CFG))
    one_job = parse(CodexTrainingRun, {**example("run-hub-push.yaml", "CodexTrainingRun")})
    one_job = one_job.model_copy(update={"spec": one_job.spec.model_copy(update={
        "evaluation": one_job.spec.evaluation.model_copy(update={"tasks": None})})})
    assert _env(build_job(one_job, CFG))["HF_TOKEN"] == token
    rendered = build_spec_configmap(run_of("run-hub-push.yaml"))["data"][SPEC_KEY]
    assert "tokenSecretRef" in rendered and "hf_" not in rendered


def test_user_service_account_gets_no_per_run_rbac():
    body = example("run.yaml", "CodexTrainingRun")
    body["spec"]["job"].update(serviceAccountName="trainer-sa", suspend=True, ttlSecondsAfterFinished=600,
                               imagePullSecrets=["regcred"])
    run = parse(CodexTrainingRun, body)
    assert build_trainer_rbac(run) == []
    job = build_job(run, CFG)
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "trainer-sa" and pod["automountServiceAccountToken"] is False
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert job["spec"]["suspend"] is True and job["spec"]["ttlSecondsAfterFinished"] == 600
    assert job_mutable_fields(run) == {"suspend": True, "activeDeadlineSeconds": 3600, "ttlSecondsAfterFinished": 600}


def test_builders_are_deterministic_and_pod_template_hash_tracks_changes():
    first, second = build_job(run_of("run.yaml"), CFG), build_job(run_of("run.yaml"), CFG)
    assert yaml.safe_dump(first) == yaml.safe_dump(second)
    env_names = [e["name"] for e in first["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert env_names == sorted(env_names)
    body = example("run.yaml", "CodexTrainingRun")
    before = desired_pod_template_hash(parse(CodexTrainingRun, body), CFG)
    body["spec"]["evaluation"]["thresholds"]["logicOk"] = 0.2  # read from the spec file: not in the template
    assert desired_pod_template_hash(parse(CodexTrainingRun, body), CFG) == before
    body["spec"]["resources"]["memory"] = "8Gi"
    assert desired_pod_template_hash(parse(CodexTrainingRun, body), CFG) != before
    assert first["metadata"]["annotations"][names.ANNOTATION_POD_TEMPLATE_HASH] == before


def test_rendered_spec_is_what_the_trainer_parses():
    run = run_of("run.yaml")
    rendered = yaml.safe_load(build_spec_configmap(run)["data"][SPEC_KEY])
    assert rendered["metadata"] == {"name": "codex-demo", "namespace": "team-a",
                                    "labels": {"codex.dev/model": "codex-demo"}}
    assert parse(CodexTrainingRun, rendered).spec == run.spec


def model_children(model_body, run_body):
    model = parse(CodexModel, model_body)
    resolution = resolve(model, [run_body])
    return model, resolution, build_deployment(model, resolution.base_model, resolution.served_adapter, CFG)


def succeeded_run(revision="abc123def456"):
    run = example("run.yaml", "CodexTrainingRun")
    run["status"] = {"phase": "Succeeded", "completionTime": "2026-01-01T01:00:00Z", "gates": {"passed": True},
                     "artifact": {"claimName": "codex-artifacts", "path": "/codex-demo/adapter", "revision": revision}}
    return run


def test_model_children_match_golden(golden):
    body = example("model.yaml", "CodexModel")
    body["spec"]["server"]["apiKeySecretRef"] = {"name": "codex-api-key", "key": "token"}
    body["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 3, "targetCpuUtilization": 60}
    model, resolution, deployment = model_children(body, succeeded_run())
    golden("model.deployment", deployment)
    golden("model.service", build_service(model))
    golden("model.hpa", build_hpa(model))
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    assert endpoint(model) == "http://codex-demo-server.team-a.svc:8000/v1"


def test_serving_deployment_rolls_on_a_new_adapter_without_downtime():
    body = example("model.yaml", "CodexModel")
    _, _, old = model_children(body, succeeded_run("rev-one"))
    _, _, new = model_children(body, succeeded_run("rev-two"))
    assert old["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    annotation = names.ANNOTATION_ADAPTER_REVISION
    assert old["spec"]["template"]["metadata"]["annotations"][annotation] == "codex-demo@rev-one"
    assert new["spec"]["template"]["metadata"]["annotations"][annotation] == "codex-demo@rev-two"
    container = old["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["--host", "$(POD_IP)"]
    assert {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in container["env"]
    args = dict(zip(container["args"][::2], container["args"][1::2]))
    assert args["--base-model"] == "embedded:smollm2-135m-instruct"
    assert args["--adapter"] == "/var/run/codex/data/pvc/codex-artifacts/codex-demo/adapter"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_operator_install_matches_golden(golden):
    golden("operator.deployment", build_operator_deployment("codex-system", "codex-operator:dev", "codex-operator",
                                                            args=["--all-namespaces"]))
    golden("operator.rbac-clusterwide", build_operator_rbac("codex-operator", "codex-system"))
    golden("operator.rbac-namespaced", build_operator_rbac("codex-operator", "codex-system", ["team-b", "team-a"],
                                                           peering=True))


def test_object_hash_ignores_key_order():
    a = {"x": 1, "y": {"b": 2, "a": 1}}
    assert object_hash(a) == object_hash(copy.deepcopy(dict(reversed(list(a.items())))))


def test_vllm_runtime_deployment_matches_golden(golden):
    from codex_operator.sync_models import build_model_children

    body = example("model-hub-vllm.yaml", "CodexModel")
    model = parse(CodexModel, body)
    children = build_model_children(model, resolve(model, []), CFG)
    deployment = children["Deployment"]
    golden("model-hub-vllm.deployment", deployment)
    pod = deployment["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["fetch-adapter"]
    assert pod["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/health"
    assert deployment["spec"]["replicas"] == 2
    assert "annotations" not in deployment["metadata"]  # the apiserver tracks what the operator applied
