"""CodexModel paths beyond the builtin happy path: a spec its runtime cannot serve (refused at apply
with the field named), and the vLLM runtime's Deployment for a Hub base and adapter, which the real
apiserver must accept (the Hub is out of reach here, so its fetch never completes; vLLM serving for
real is test_e2e_vllm.py)."""

from __future__ import annotations

import json

import pytest
from e2e_support import events_for, get, status_of, wait

pytestmark = pytest.mark.cluster
# How the operator is installed for this module (see conftest.py).
INSTALL = "kustomize"


def vllm_model(name: str, gpus: int) -> dict:
    return {
        "apiVersion": "codex.dev/v1alpha1", "kind": "CodexModel", "metadata": {"name": name},
        "spec": {
            "baseModel": {"hub": "Qwen/Qwen2.5-Coder-0.5B-Instruct"},
            "adapter": {"hub": {"repoId": "my-org/codex-qwen-lora", "revision": "main",
                                "tokenSecretRef": {"name": "hf-token", "key": "token"}}},
            "runtime": "vllm",
            "resources": {"gpus": gpus, "cpu": "2", "memory": "8Gi"},
            "server": {"apiKeySecretRef": {"name": "codex-api-key", "key": "token"}},
        },
    }


def test_unservable_spec_is_refused_at_apply_with_the_field_named(cluster, namespace, operator):
    # The runtime catalogue says vllm needs a GPU, and the CRD's rule says so at apply (a runtime's
    # refusal that only the resolved adapter can show is reported as InvalidSpec instead: unit-tested).
    refused = cluster.apply(vllm_model("no-gpu", gpus=0), namespace=namespace, check=False)
    assert refused.returncode != 0
    assert "spec.resources.gpus" in refused.stderr and "the vllm runtime needs at least one GPU" in refused.stderr
    assert cluster.kubectl("get", "codexmodel", "no-gpu", "-n", namespace, check=False).returncode != 0
    assert operator.pod_name()  # still running


def test_vllm_deployment_is_accepted_by_the_apiserver(cluster, namespace, operator):
    cluster.apply(vllm_model("qwen", gpus=1), namespace=namespace)
    deployment = wait("the vLLM Deployment", lambda: cluster.kubectl(
        "get", "deployment", "qwen-server", "-n", namespace, "-o", "name", check=False).stdout.strip(), 90)
    assert deployment
    spec = get(cluster, "deployment", "qwen-server", namespace)["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["fetch-adapter"]
    server = spec["containers"][0]
    assert server["image"].startswith("vllm/vllm-openai") and "--enable-lora" in server["args"]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = {e["name"]: e for e in server["env"]}
    assert env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "codex-api-key", "key": "token"}
    # The object passes the apiserver's full validation once more, as a server-side dry run.
    live = get(cluster, "deployment", "qwen-server", namespace)
    live.pop("status", None)
    cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(live))
    status = status_of(cluster, "codexmodel", "qwen", namespace)
    assert status["servedAdapter"] == {"source": "hub", "repo": "my-org/codex-qwen-lora", "revision": "main"}
    assert status["phase"] == "Progressing"  # created, but nothing here can run vLLM
    assert "AdapterPromoted" in [e["reason"] for e in events_for(cluster, namespace, "qwen")]
