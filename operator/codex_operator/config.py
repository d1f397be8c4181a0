"""The operator's configuration: the command line (each flag with an environment variable as its
default) is read once, in ``codex-operator``'s main, into one frozen :class:`OperatorConfig`
that reaches the handlers through kopf's ``memo``.

Builders take the config as an argument instead of reading the environment, so they stay pure
and their output depends only on their inputs. Every concurrency bound sits in :class:`Limits`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Optional

from codex_api import images

# Environment variables the operator's Deployment sets (each is a flag's default, see main.py).
ENV_TRAINER_IMAGE = "CODEX_TRAINER_IMAGE"
ENV_RUNTIME_IMAGES = "CODEX_RUNTIME_IMAGES"
ENV_TRAINER_CPU = "CODEX_DEFAULT_TRAINER_CPU"
ENV_TRAINER_MEMORY = "CODEX_DEFAULT_TRAINER_MEMORY"
ENV_SERVER_CPU = "CODEX_DEFAULT_SERVER_CPU"
ENV_SERVER_MEMORY = "CODEX_DEFAULT_SERVER_MEMORY"
ENV_IMAGE_PULL_POLICY = "CODEX_IMAGE_PULL_POLICY"
ENV_SANDBOX_RUNTIME_CLASS = "CODEX_SANDBOX_RUNTIME_CLASS"
ENV_TRAINER_GPU_MEMORY = "CODEX_DEFAULT_TRAINER_GPU_MEMORY_GIB"
ENV_METRICS_PORT = "CODEX_METRICS_PORT"
ENV_POD_IP = "POD_IP"

DEFAULT_METRICS_PORT = 9090


@dataclass(frozen=True)
class Resources:
    """Requests (= limits) applied when a spec leaves cpu or memory unset."""

    cpu: Optional[str] = None
    memory: Optional[str] = None


@dataclass(frozen=True)
class Limits:
    """How much the operator does at once, all in one place (measured in bench/operator_scale.py).

    ``api_threads`` bounds the requests in flight: it is the one limit on the API server's side.
    ``run_slots`` runs build and create their Job's path at once, enough to keep those threads
    busy; the rest wait with nothing built, so memory follows the API's pace, not a burst's size.
    ``run_workers`` reconcile runs at once: enough that every new run of a burst reaches a slot
    before any Role or status write is sent (a waiting reconcile holds only its key).
    """

    api_threads: int = 16
    run_slots: int = 32
    run_workers: int = 1024
    model_workers: int = 4


def parse_runtime_images(text: Optional[str]) -> dict[str, str]:
    """``"vllm=repo/vllm:1,builtin=repo/serve:2"`` (flag values or the environment) -> by runtime name."""
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        name, sep, image = item.strip().partition("=")
        if not item.strip():
            continue
        if not sep or not name.strip() or not image.strip():
            raise ValueError(f"runtime image {item.strip()!r}: expected NAME=IMAGE")
        out[name.strip()] = image.strip()
    return out


@dataclass(frozen=True)
class OperatorConfig:
    trainer_image: str = images.DEV_TRAINER_IMAGE
    # Image overrides by CodexModel runtime name; a runtime not named uses runtime_image's default.
    runtime_images: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    trainer_resources: Resources = field(default_factory=Resources)
    server_resources: Resources = field(default_factory=Resources)
    image_pull_policy: Optional[str] = None
    # The runtimeClassName of sandbox pods (gVisor, Kata) when a run's spec names none.
    sandbox_runtime_class: Optional[str] = None
    # One GPU's memory (GiB) for the trainer's memory plan when a run's spec.resources.gpuMemoryGiB is unset
    # and the trainer cannot read the device's own.
    trainer_gpu_memory_gib: Optional[float] = None
    metrics_port: int = DEFAULT_METRICS_PORT
    # Where the operator's own HTTP servers bind: the pod IP in-cluster, all interfaces otherwise.
    bind_host: str = "0.0.0.0"
    # Who reports the operator's Events: the pod name in-cluster (HOSTNAME), else the host name.
    instance: str = "codex-operator"
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        object.__setattr__(self, "runtime_images", MappingProxyType(dict(self.runtime_images)))

    def runtime_image(self, name: str, default: Optional[str] = None) -> str:
        """The image of runtime ``name``: the configured override, else the runtime's own default,
        else the trainer image (which ships codex-serve)."""
        return self.runtime_images.get(name) or default or self.trainer_image
