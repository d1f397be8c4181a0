"""The vLLM runtime builder: golden YAML per case (UPDATE_GOLDEN=1 regenerates), its refusals, and the
init container's fetch script run for real against the fake Hub."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
from codex_api import CodexModel, parse, paths
from codex_api.common import ModelSource
from codex_api.model import ServedAdapter

from codex_operator.builders.vllm import (
    COPY_BASE_CONTAINER,
    FETCH_CONTAINER,
    VllmSpecError,
    build_vllm_pod,
    max_lora_rank,
    vllm_args,
)
from codex_operator.config import OperatorConfig, Resources
from fakehub import fake_hub, seed_repo  # noqa: F401  (fake_hub is a fixture)
from op_examples import example

# No --runtime-image: the vLLM image is the catalogue's default.
CFG = OperatorConfig(trainer_image="registry.example/codex-trainer:1.0", server_resources=Resources("2", "8Gi"))
SHA = "0123456789abcdef0123456789abcdef01234567"


def hub_model() -> CodexModel:
    return parse(CodexModel, example("model-hub-vllm.yaml", "CodexModel"))


def pvc_model() -> CodexModel:
    obj = example("model-hub-vllm.yaml", "CodexModel")
    obj["metadata"]["name"] = "codex-local"
    obj["spec"]["baseModel"] = {"pvc": {"claimName": "models", "path": "/qwen-0.5b"}, "trustRemoteCode": True}
    obj["spec"]["adapter"] = {"pvc": {"claimName": "adapters", "path": "/codex/v3"}}
    obj["spec"]["resources"] = {"gpus": 2, "gpuResourceName": "amd.com/gpu"}
    del obj["spec"]["server"]["apiKeySecretRef"]
    return parse(CodexModel, obj)


def run_model() -> CodexModel:
    obj = example("model.yaml", "CodexModel")
    obj["spec"]["runtime"] = "vllm"
    obj["spec"]["server"].pop("maskSecrets")  # builtin only: refused on vllm rather than ignored
    obj["spec"]["resources"]["gpus"] = 1
    return parse(CodexModel, obj)


RUN_BASE = ModelSource(hub="HuggingFaceTB/SmolLM2-135M-Instruct", revision="v1.0",
                       tokenSecretRef={"name": "hf-read", "key": "token"})
CASES = {
    "hub-adapter": (hub_model, lambda m: m.spec.base_model,
                    ServedAdapter(source="hub", repo="my-org/codex-qwen-lora", revision=SHA), None),
    "pvc-adapter": (pvc_model, lambda m: m.spec.base_model,
                    ServedAdapter(source="pvc", claim_name="adapters", path="/codex/v3", revision="sha256:ab12"), 128),
    "training-run-hub": (run_model, lambda m: RUN_BASE,
                         ServedAdapter(source="trainingRun", training_run="codex-demo-7", repo="org/codex-demo",
                                       revision=SHA), 16),
}


def build(case: str):
    make_model, base_of, served, rank = CASES[case]
    model = make_model()
    return model, base_of(model), served, build_vllm_pod(model, base_of(model), served, CFG, lora_rank=rank)


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_vllm_pod_matches_golden(case, golden):
    _, _, _, pod = build(case)
    golden(f"model-vllm.{case}", {"initContainers": pod.init_containers, "container": pod.container,
                                  "extraVolumes": pod.extra_volumes})


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_output_is_deterministic_and_never_carries_a_secret_inline(case):
    model, base, served, pod = build(case)
    assert build(case)[3] == pod
    for container in [pod.container, *pod.init_containers]:
        names = [e["name"] for e in container["env"]]
        assert names == sorted(names) and len(set(names)) == len(names)
        for entry in container["env"]:
            if entry["name"] in ("VLLM_API_KEY", paths.ENV_HF_TOKEN):
                assert set(entry["valueFrom"]) == {"secretKeyRef"} and "value" not in entry
        assert not any("api-key" in arg or "token" in arg.lower() for arg in container["args"])


def test_adapter_is_registered_under_the_model_name():
    model, base, served, pod = build("hub-adapter")
    args = pod.container["args"]
    pairs = dict(zip(args[::2], args[1::2]))
    assert args[args.index("--lora-modules") + 1] == f"codex-qwen={paths.ADAPTER_DIR}"
    assert "--enable-lora" in args
    assert pairs["--model"] == "Qwen/Qwen2.5-Coder-0.5B-Instruct"
    assert args[args.index("--max-model-len") + 1] == str(2048 + 512)
    fetch = pod.init_containers[0]
    assert fetch["name"] == FETCH_CONTAINER and fetch["args"][:3] == ["my-org/codex-qwen-lora", SHA,
                                                                       str(paths.ADAPTER_DIR)]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}} in fetch["env"]
    assert pod.container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert {"name": "adapter", "mountPath": str(paths.ADAPTER_DIR), "readOnly": True} in pod.container["volumeMounts"]


def test_pvc_adapter_needs_no_fetch_and_is_read_in_place():
    _, _, _, pod = build("pvc-adapter")
    assert pod.init_containers == []
    args = pod.container["args"]
    assert args[args.index("--lora-modules") + 1] == f"codex-local={paths.pvc_dir('adapters')}/codex/v3"
    assert args[args.index("--tensor-parallel-size") + 1] == "2" and "--trust-remote-code" in args
    assert not any(v["name"] == "adapter" for v in pod.extra_volumes)


@pytest.mark.parametrize("rank,expected", [(None, 64), (4, 8), (8, 8), (9, 16), (200, 256), (300, 320), (512, 512)])
def test_lora_rank_rounds_up_to_a_rank_vllm_accepts(rank, expected):
    assert max_lora_rank(rank) == expected


HUB_ADAPTER = ServedAdapter(source="hub", repo="o/a")
REFUSALS = {
    "no adapter location": (lambda m: (m, m.spec.base_model, ServedAdapter(source="trainingRun", training_run="r")),
                            "status.servedAdapter"),
}


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_what_vllm_cannot_serve_is_refused_naming_the_field(case):
    make, field = REFUSALS[case]
    model, base, served = make(hub_model())
    with pytest.raises(VllmSpecError, match=f"^{field.replace('.', '[.]')}"):
        build_vllm_pod(model, base, served, CFG)
    with pytest.raises(VllmSpecError, match="spec.adapter: LoRA rank 1024"):
        vllm_args(hub_model(), hub_model().spec.base_model, HUB_ADAPTER, lora_rank=1024)


@pytest.mark.parametrize("dtype,passed", [("auto", None), ("float32", "float32"), ("bfloat16", "bfloat16")])
def test_server_dtype_reaches_both_runtimes_as_dtype(dtype, passed):
    from codex_operator.builders.deployment import server_args

    model = hub_model()
    model = model.model_copy(update={"spec": model.spec.model_copy(update={
        "server": model.spec.server.model_copy(update={"dtype": dtype})})})
    for args in (vllm_args(model, model.spec.base_model, HUB_ADAPTER),
                 server_args(model, model.spec.base_model, HUB_ADAPTER)):
        assert (args[args.index("--dtype") + 1] if "--dtype" in args else None) == passed


def test_an_embedded_base_is_copied_in_from_the_trainer_image_by_an_init_container(tmp_path):
    """vLLM's image has no embedded models: the trainer image's init container copies one into an
    emptyDir, and vLLM loads it from there (run here for real, into a temporary directory)."""
    pod = build_vllm_pod(hub_model(), ModelSource(embedded="tiny-llama"), HUB_ADAPTER, CFG)
    copy_base, fetch = pod.init_containers
    assert (copy_base["name"], copy_base["image"], fetch["name"]) == (COPY_BASE_CONTAINER, CFG.trainer_image,
                                                                      FETCH_CONTAINER)
    args = pod.container["args"]
    assert args[args.index("--model") + 1] == str(paths.BASE_MODEL_DIR)
    mounts = {m["mountPath"]: m for m in pod.container["volumeMounts"]}
    assert mounts[str(paths.BASE_MODEL_DIR)] == {"name": "base-model", "mountPath": str(paths.BASE_MODEL_DIR),
                                                 "readOnly": True}
    assert {"name": "base-model", "emptyDir": {}} in pod.extra_volumes
    command = [part if part != str(paths.BASE_MODEL_DIR) else str(tmp_path / "base") for part in copy_base["command"]]
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home"), "CODEX_MODELS_DIR": str(tmp_path / "models")}
    result = subprocess.run([sys.executable, "-m", "codex_trainer.cli", *command[1:]], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "base" / "config.json").is_file() and list((tmp_path / "base").glob("*.safetensors"))


def _run_fetch(fetch: dict, target: Path, hub_url: str, token: str | None, tmp_path: Path):
    args = copy.copy(fetch["args"])
    args[2] = str(target)  # the emptyDir's path, here a temporary directory
    env = {"PATH": os.environ["PATH"], "HF_ENDPOINT": hub_url, "HF_HOME": str(tmp_path / "hf-home"),
           "HF_HUB_DISABLE_TELEMETRY": "1", **({"HF_TOKEN": token} if token else {})}
    return subprocess.run([sys.executable, *fetch["command"][1:], *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_fetch_script_downloads_a_private_adapter_with_the_token(fake_hub, tmp_path):
    sha = seed_repo(fake_hub, "my-org/codex-qwen-lora", {
        "adapter_config.json": b'{"peft_type": "LORA", "r": 8}', "adapter_model.safetensors": b"weights",
        "tokenizer.json": b"{}", "big/optimizer.pt": b"not an adapter file"}, private=True)
    _, _, _, pod = build("hub-adapter")
    fetch = copy.deepcopy(pod.init_containers[0])
    fetch["args"][1] = sha
    target = tmp_path / "adapter"
    result = _run_fetch(fetch, target, fake_hub.url, fake_hub.token, tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in target.iterdir() if p.is_file()) == [
        "adapter_config.json", "adapter_model.safetensors", "tokenizer.json"]
    denied = _run_fetch(fetch, tmp_path / "anonymous", fake_hub.url, None, tmp_path)
    assert denied.returncode != 0


def test_the_fetch_script_refuses_a_repo_that_is_not_an_adapter(fake_hub, tmp_path):
    sha = seed_repo(fake_hub, "my-org/codex-qwen-lora", {"README.md": b"# not an adapter"})
    _, _, _, pod = build("hub-adapter")
    fetch = copy.deepcopy(pod.init_containers[0])
    fetch["args"][1] = sha
    result = _run_fetch(fetch, tmp_path / "adapter", fake_hub.url, None, tmp_path)
    assert result.returncode == 1
    assert "spec.adapter: my-org/codex-qwen-lora@" in result.stderr and "no adapter_config.json" in result.stderr


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_the_pieces_fit_the_serving_deployment(case):
    """Every mount names a volume of the Deployment that deployment.build_deployment assembles, once."""
    from codex_operator.builders.deployment import build_deployment

    model, base, served, pod = build(case)
    deployment = build_deployment(model, base, served, CFG, container=pod.container,
                                  init_containers=pod.init_containers, extra_volumes=pod.extra_volumes)
    spec = deployment["spec"]["template"]["spec"]
    volumes = [v["name"] for v in spec["volumes"]]
    assert len(volumes) == len(set(volumes))
    for container in spec["containers"] + spec.get("initContainers", []):
        for mount in container["volumeMounts"]:
            assert mount["name"] in volumes, (container["name"], mount)
