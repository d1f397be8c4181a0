"""The builtin runtime: codex-serve (CPU or GPU, any base model including the embedded ones),
as builders/deployment.py builds it."""

from __future__ import annotations

from typing import Any

from codex_api import CodexModel

from ..builders.deployment import build_deployment as build_serving_deployment
from ..config import OperatorConfig
from ..promotion import Resolution


def build_deployment(model: CodexModel, resolution: Resolution, cfg: OperatorConfig) -> dict[str, Any]:
    """The codex-serve Deployment of the resolved adapter."""
    assert resolution.base_model is not None and resolution.served_adapter is not None, "resolve first"
    return build_serving_deployment(model, resolution.base_model, resolution.served_adapter, cfg)
