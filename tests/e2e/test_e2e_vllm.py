"""vLLM serving for real on the embedded cluster: a run trains a LoRA adapter on SmolLM2-135M, a
CodexModel with ``runtime: vllm`` and ``fromTrainingRun`` goes Available, and vLLM's completion at
temperature 0 is what transformers + peft generate from the same base and adapter, token for token.

The node agent runs the vllm/vllm-openai image (at the pinned release) from the cached vLLM CPU environment
(``make vllm-env``); the embedded base model reaches vLLM through the trainer image's init container.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
import torch
from e2e_support import condition, get, sample_data, tiny_run, wait_phase

from localcluster import vllmenv

pytestmark = [pytest.mark.cluster, pytest.mark.slow,
              pytest.mark.skipif(not vllmenv.ready(), reason="no vLLM environment: make vllm-env")]
INSTALL = "helm"
NAMESPACE_OBJECTS = sample_data()
BASE = "smollm2-135m-instruct"
PROMPT = "def add(a, b):\n"
NEW_TOKENS = 12


def smol_run(name: str) -> dict:
    run = tiny_run(name, steps=2, save_steps=2, labels={"codex.dev/model": "smol"}, baseModel={"embedded": BASE},
                   evaluation={})
    run["spec"]["training"].update(maxSeqLength=64, perDeviceBatchSize=2, learningRate=1e-3)
    run["spec"]["resources"].update(memory="4Gi")
    return run


def vllm_model(name: str) -> dict:
    return {"apiVersion": "codex.dev/v1alpha1", "kind": "CodexModel", "metadata": {"name": name},
            "spec": {"runtime": "vllm", "adapter": {"fromTrainingRun": {"selector": {"codex.dev/model": "smol"}}},
                     "resources": {"gpus": 1, "cpu": "2", "memory": "6Gi"},
                     # fp32 on both sides, so that greedy decoding can be held to the same tokens.
                     "server": {"maxNewTokens": 32, "maxPromptTokens": 256, "maxConcurrency": 4,
                                "dtype": "float32"}}}


def complete(url: str, model: str) -> list[int]:
    body = json.dumps({"model": model, "prompt": PROMPT, "max_tokens": NEW_TOKENS, "min_tokens": NEW_TOKENS,
                       "temperature": 0, "return_token_ids": True}).encode()
    request = urllib.request.Request(f"{url}/v1/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return list(json.loads(response.read())["choices"][0]["token_ids"])


def claim_dir(cluster, namespace: str, claim: str) -> Path:
    """The host directory behind a claim (the local provisioner's hostPath PV)."""
    volume = get(cluster, "pvc", claim, namespace)["spec"]["volumeName"]
    return Path(get(cluster, "pv", volume, "")["spec"]["hostPath"]["path"])


def peft_tokens(adapter: Path) -> list[int]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codex_trainer.embedded import embedded_model_dir

    base = embedded_model_dir(BASE)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), str(adapter))
    encoded = tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        output = model.eval().generate(**encoded, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                       do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return output[0, encoded["input_ids"].shape[1]:].tolist()


def test_vllm_serves_the_trained_adapter_as_peft_does(cluster, namespace, operator):
    cluster.apply(smol_run("smol-1"), namespace=namespace)
    cluster.apply(vllm_model("smol"), namespace=namespace)
    status = wait_phase(cluster, namespace, "smol-1", ("Succeeded", "Failed"), timeout=900)
    assert status["phase"] == "Succeeded", status.get("message")

    served = wait_phase(cluster, namespace, "smol", ("Available", "Degraded"), kind="codexmodel", timeout=900)
    assert served["phase"] == "Available", served
    assert served["servedAdapter"]["trainingRun"] == "smol-1"
    assert condition(served, "Available")["status"] == "True"
    pod = get(cluster, "deployment", "smol-server", namespace)["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["copy-base-model"]
    assert pod["containers"][0]["image"] == vllmenv.IMAGE

    url = cluster.service_address(namespace, "smol-server", 8000)
    with urllib.request.urlopen(f"{url}/v1/models", timeout=30) as response:
        listed = {m["id"] for m in json.loads(response.read())["data"]}
    assert listed == {"smol", "smol-base"}
    adapter = claim_dir(cluster, namespace, "codex-artifacts") / "smol-1"
    assert complete(url, "smol") == peft_tokens(adapter)
