"""The vLLM runtime: the serving Deployment (builders/deployment.py) around vLLM's container, the
adapter-fetching init container and the volumes builders/vllm.py adds."""

from __future__ import annotations

from typing import Any

from codex_api import CodexModel

from ..builders.deployment import build_deployment as build_serving_deployment
from ..builders.vllm import build_vllm_pod
from ..config import OperatorConfig
from ..promotion import Resolution


def build_deployment(model: CodexModel, resolution: Resolution, cfg: OperatorConfig) -> dict[str, Any]:
    """The vLLM Deployment; its LoRA slots are sized from the adapter's rank when the run told it.

    Raises:
        VllmSpecError: an embedded base model (from a run), an adapter with neither repo nor claim, a rank over 512.
    """
    base, served = resolution.base_model, resolution.served_adapter
    assert base is not None and served is not None, "resolve first"
    pod = build_vllm_pod(model, base, served, cfg, lora_rank=resolution.lora_rank)
    return build_serving_deployment(model, base, served, cfg, container=pod.container,
                                    init_containers=pod.init_containers, extra_volumes=pod.extra_volumes)
