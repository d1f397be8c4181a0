"""The operator's configuration: read from the environment once, at startup, then frozen.

Builders take an :class:`OperatorConfig` argument instead of reading the environment, so
they stay pure and their output depends only on their inputs.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Mapping, Optional

# Environment variables (also settable through the codex-operator command line).
ENV_TRAINER_IMAGE = "CODEX_TRAINER_IMAGE"
ENV_SERVE_IMAGE = "CODEX_SERVE_IMAGE"
ENV_VLLM_IMAGE = "CODEX_VLLM_IMAGE"
ENV_TRAINER_CPU = "CODEX_DEFAULT_TRAINER_CPU"
ENV_TRAINER_MEMORY = "CODEX_DEFAULT_TRAINER_MEMORY"
ENV_SERVER_CPU = "CODEX_DEFAULT_SERVER_CPU"
ENV_SERVER_MEMORY = "CODEX_DEFAULT_SERVER_MEMORY"
ENV_IMAGE_PULL_POLICY = "CODEX_IMAGE_PULL_POLICY"
ENV_METRICS_PORT = "CODEX_METRICS_PORT"
ENV_POD_IP = "POD_IP"

DEFAULT_TRAINER_IMAGE = "codex-trainer:dev"
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.11.0"
DEFAULT_METRICS_PORT = 9090


@dataclass(frozen=True)
class Resources:
    """Requests (= limits) applied when a spec leaves cpu or memory unset."""

    cpu: Optional[str] = None
    memory: Optional[str] = None


@dataclass(frozen=True)
class OperatorConfig:
    trainer_image: str = DEFAULT_TRAINER_IMAGE
    # codex-serve ships in the trainer image, so the builtin runtime uses it unless told otherwise.
    serve_image: str = DEFAULT_TRAINER_IMAGE
    vllm_image: str = DEFAULT_VLLM_IMAGE
    trainer_resources: Resources = field(default_factory=Resources)
    server_resources: Resources = field(default_factory=Resources)
    image_pull_policy: Optional[str] = None
    metrics_port: int = DEFAULT_METRICS_PORT
    # Where the operator's own HTTP servers bind: the pod IP in-cluster, loopback otherwise.
    bind_host: str = "0.0.0.0"
    # Who reports the operator's Events: the pod name in-cluster (HOSTNAME), else the host name.
    instance: str = "codex-operator"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "OperatorConfig":
        env = os.environ if environ is None else environ
        trainer_image = env.get(ENV_TRAINER_IMAGE) or DEFAULT_TRAINER_IMAGE
        return cls(
            trainer_image=trainer_image,
            serve_image=env.get(ENV_SERVE_IMAGE) or trainer_image,
            vllm_image=env.get(ENV_VLLM_IMAGE) or DEFAULT_VLLM_IMAGE,
            trainer_resources=Resources(env.get(ENV_TRAINER_CPU) or None, env.get(ENV_TRAINER_MEMORY) or None),
            server_resources=Resources(env.get(ENV_SERVER_CPU) or None, env.get(ENV_SERVER_MEMORY) or None),
            image_pull_policy=env.get(ENV_IMAGE_PULL_POLICY) or None,
            metrics_port=int(env.get(ENV_METRICS_PORT) or DEFAULT_METRICS_PORT),
            bind_host=env.get(ENV_POD_IP) or "0.0.0.0",
            instance=env.get("HOSTNAME") or socket.gethostname(),
        )
