"""The vLLM runtime of a CodexModel: the OpenAI server container, the adapter-fetching init container, volumes.

Pure: a validated :class:`~codex_api.CodexModel`, the resolved base model and served adapter, and
the operator's config in; dicts out. The Deployment around them is ``deployment.build_deployment``,
which already adds the ``hf-home`` and ``tmp`` emptyDirs and the read-only PVC volumes
(``deployment.server_volumes``); this module adds only what vLLM needs on top.

- The adapter is registered under the CodexModel's name (``--lora-modules <name>=<dir>``), so
  ``"model": "<name>"`` selects it; the bare base answers as ``<name>-base``.
- A Hub adapter is fetched before vLLM starts by an init container (huggingface_hub, the token from
  the Secret by reference) into an emptyDir at ``paths.ADAPTER_DIR``; a PVC adapter is read in place.
- An embedded base model (baked into the trainer image, not vLLM's) is copied by an init container
  of the trainer image (``codex-train prepare-embedded --copy-to``) into an emptyDir at
  ``paths.BASE_MODEL_DIR``.
- The API key reaches vLLM as ``VLLM_API_KEY`` from the Secret, never as an argument.
- Readiness, liveness and startup probes use vLLM's ``/health``.
- Sampling defaults come from each request (``--generation-config vllm``), as with codex-serve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from codex_api import CodexModel, paths
from kubernetes.utils.quantity import parse_quantity
from codex_api.common import ModelSource, SecretKeyRef
from codex_api.model import ServedAdapter

from .. import names
from ..config import OperatorConfig
from .common import (container_security_context, env_value, resource_requirements, secret_envs, serving_pod_env,
                     sorted_env)
from .deployment import server_volumes
from .serving import ServeSpecError, serving_image

VLLM_PORT = 8000
# vLLM accepts only these --max-lora-rank values; an adapter's rank is rounded up to one of them.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
# Rank assumed when the adapter's is not known before it is downloaded.
DEFAULT_MAX_LORA_RANK = 64
FETCH_CONTAINER = "fetch-adapter"
COPY_BASE_CONTAINER = "copy-base-model"
ADAPTER_VOLUME = "adapter"
BASE_MODEL_VOLUME = "base-model"
SHM_VOLUME = "dshm"
HOME_VOLUME = "home"
HOME_DIR = str(paths.SCRATCH_DIR)
# What an adapter repo needs; weights in other formats and large extras are skipped.
ADAPTER_PATTERNS = ("adapter_config.json", "adapter_model.safetensors", "*.json", "*.jinja", "*.txt", "*.model")
# Runs in the init container as `python -c SCRIPT REPO REVISION TARGET PATTERN...`: no shell, no interpolation.
FETCH_SCRIPT = """\
import pathlib, sys
from huggingface_hub import snapshot_download
repo, revision, target, *patterns = sys.argv[1:]
snapshot_download(repo, revision=revision, local_dir=target, allow_patterns=patterns)
if not (pathlib.Path(target) / "adapter_config.json").is_file():
    sys.exit(f"spec.adapter: {repo}@{revision} has no adapter_config.json; is it a peft adapter?")
print(f"fetched {repo}@{revision} into {target}")
"""


class VllmSpecError(ServeSpecError):
    """The spec asks for something the vLLM runtime cannot serve; the message names the field."""


@dataclass(frozen=True)
class VllmPod:
    """What ``deployment.build_deployment`` takes for the vLLM runtime."""

    container: dict[str, Any]
    init_containers: list[dict[str, Any]]
    extra_volumes: list[dict[str, Any]]


def max_lora_rank(rank: Optional[int]) -> int:
    """The smallest rank vLLM accepts that holds ``rank`` (unknown: DEFAULT_MAX_LORA_RANK)."""
    if rank is None:
        return DEFAULT_MAX_LORA_RANK
    for allowed in VLLM_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise VllmSpecError(f"spec.adapter: LoRA rank {rank} exceeds vLLM's maximum of {VLLM_LORA_RANKS[-1]}")


def base_model_location(base: ModelSource) -> str:
    """``--model``: a Hub repo id, the checkpoint directory on the mounted PVC, or the embedded model's copy."""
    if base.hub is not None:
        return base.hub
    if base.pvc is not None:
        return str(paths.pvc_dir(base.pvc.claim_name) / base.pvc.path.lstrip("/"))
    return str(paths.BASE_MODEL_DIR)


def adapter_location(adapter: ServedAdapter) -> str:
    """Where vLLM finds the adapter: the init container's download, or its directory on the PVC."""
    if adapter.claim_name is not None:
        return str(paths.pvc_dir(adapter.claim_name) / (adapter.path or "/").lstrip("/"))
    if adapter.repo is not None:
        return str(paths.ADAPTER_DIR)
    raise VllmSpecError("status.servedAdapter: neither a Hub repo nor a PVC; nothing to serve")


def hub_token_ref(model: CodexModel, base: ModelSource) -> Optional[SecretKeyRef]:
    """The adapter's own token when it has one, else the base model's (a private org often shares one)."""
    hub = model.spec.adapter.hub
    if hub is not None and hub.token_secret_ref is not None:
        return hub.token_secret_ref
    return base.token_secret_ref


def vllm_args(model: CodexModel, base: ModelSource, served: ServedAdapter,
              lora_rank: Optional[int] = None) -> list[str]:
    """Arguments of ``python3 -m vllm.entrypoints.openai.api_server``."""
    server, name = model.spec.server, model.metadata.name
    args = [
        "--model", base_model_location(base),
        "--served-model-name", f"{name}-base",
        "--enable-lora",
        "--lora-modules", f"{name}={adapter_location(served)}",
        "--max-lora-rank", str(max_lora_rank(lora_rank)),
        "--max-loras", "1",
        "--max-model-len", str(server.max_prompt_tokens + server.max_new_tokens),
        "--max-num-seqs", str(server.max_concurrency),
        "--generation-config", "vllm",
        "--host", "$(POD_IP)",
        "--port", str(VLLM_PORT),
    ]
    if base.hub is not None and base.revision:
        args += ["--revision", base.revision]
    if base.trust_remote_code:
        args.append("--trust-remote-code")
    if server.dtype != "auto":
        args += ["--dtype", server.dtype]
    if model.spec.resources.gpus > 1:
        args += ["--tensor-parallel-size", str(model.spec.resources.gpus)]
    return args


def cpu_kv_cache_gib(memory: Optional[str]) -> int:
    """A quarter of the container's memory for the KV cache on vLLM's CPU build (1 GiB at least, and
    when the spec sets no memory)."""
    if memory is None:
        return 1
    return max(1, int(parse_quantity(memory) / 4 / 2**30))


def vllm_env(model: CodexModel, base: ModelSource) -> list[dict[str, Any]]:
    return sorted_env([
        *serving_pod_env(),
        # The root filesystem is read-only and the image's user has no home: caches go to an emptyDir.
        env_value("HOME", HOME_DIR),
        env_value("XDG_CACHE_HOME", f"{HOME_DIR}/.cache"),
        # No usage statistics phoned home from a cluster.
        env_value("VLLM_NO_USAGE_STATS", "1"),
        # vLLM's CPU build only (a GPU build ignores it): the KV cache in GiB, instead of reserving a
        # fraction of the whole host's memory whatever the container's limit.
        env_value("VLLM_CPU_KVCACHE_SPACE", str(cpu_kv_cache_gib(model.spec.resources.memory))),
        env_value("DO_NOT_TRACK", "1"),
        # The base model's token only (a gated or private base); the adapter is fetched before vLLM starts.
        *secret_envs([("VLLM_API_KEY", model.spec.server.api_key_secret_ref),
                      (paths.ENV_HF_TOKEN, base.token_secret_ref)]),
    ])


def health_probe(period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": period, "failureThreshold": failures,
            "timeoutSeconds": 5}


def vllm_volumes(base: ModelSource, served: ServedAdapter) -> tuple[list[dict], list[dict]]:
    """Volumes beyond deployment.server_volumes, and the vLLM container's mounts of those."""
    volumes = [
        {"name": HOME_VOLUME, "emptyDir": {}},
        # PyTorch's shared memory for tensor-parallel workers; the container default of 64Mi is too small.
        {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}},
    ]
    mounts = [{"name": HOME_VOLUME, "mountPath": HOME_DIR}, {"name": SHM_VOLUME, "mountPath": "/dev/shm"}]
    if served.claim_name is None:
        volumes.append({"name": ADAPTER_VOLUME, "emptyDir": {}})
        mounts.append({"name": ADAPTER_VOLUME, "mountPath": str(paths.ADAPTER_DIR), "readOnly": True})
    if base.embedded is not None:
        volumes.append({"name": BASE_MODEL_VOLUME, "emptyDir": {}})
        mounts.append({"name": BASE_MODEL_VOLUME, "mountPath": str(paths.BASE_MODEL_DIR), "readOnly": True})
    return sorted(volumes, key=lambda v: v["name"]), sorted(mounts, key=lambda m: m["mountPath"])


def _base_mounts(base: ModelSource, served: ServedAdapter) -> list[dict[str, Any]]:
    _, mounts = server_volumes(base, served)
    return mounts


def _init_container(name: str, model: CodexModel, cfg: OperatorConfig, command: list[str], env: list[dict],
                    mounts: list[dict], args: Optional[list[str]] = None) -> dict[str, Any]:
    """An init container of the trainer image (Python, huggingface_hub, the embedded models) beside vLLM."""
    resources = model.spec.resources
    container: dict[str, Any] = {
        "name": name,
        "image": cfg.trainer_image,
        "command": command,
        **({"args": args} if args else {}),
        "env": sorted_env(env),
        # GPUs are the server's; an init container gets the same cpu and memory so the pod keeps its QoS class.
        "resources": resource_requirements(resources.cpu, resources.memory, 0, resources.gpu_resource_name,
                                           cfg.server_resources),
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": sorted([*mounts, {"name": HOME_VOLUME, "mountPath": HOME_DIR}], key=lambda m: m["mountPath"]),
    }
    if cfg.image_pull_policy:
        container["imagePullPolicy"] = cfg.image_pull_policy
    return container


def build_copy_base_container(model: CodexModel, base: ModelSource, cfg: OperatorConfig) -> Optional[dict[str, Any]]:
    """The init container that copies an embedded base model into BASE_MODEL_DIR; None for other bases."""
    if base.embedded is None:
        return None
    return _init_container(
        COPY_BASE_CONTAINER, model, cfg,
        ["codex-train", "prepare-embedded", "--model", base.embedded, "--copy-to", str(paths.BASE_MODEL_DIR)],
        [env_value("HOME", HOME_DIR)], [{"name": BASE_MODEL_VOLUME, "mountPath": str(paths.BASE_MODEL_DIR)}])


def build_fetch_container(model: CodexModel, base: ModelSource, served: ServedAdapter,
                          cfg: OperatorConfig) -> Optional[dict[str, Any]]:
    """The init container that downloads a Hub adapter into ADAPTER_DIR with the trainer image (it has
    Python and huggingface_hub); None for a PVC adapter."""
    if served.repo is None or served.claim_name is not None:
        return None
    env = [env_value("HF_HOME", str(paths.HF_HOME)), env_value("HOME", HOME_DIR),
           env_value("HF_HUB_DISABLE_TELEMETRY", "1"), *secret_envs([(paths.ENV_HF_TOKEN, hub_token_ref(model, base))])]
    return _init_container(
        FETCH_CONTAINER, model, cfg, ["python", "-c", FETCH_SCRIPT], env,
        [*(m for m in _base_mounts(base, served) if m["mountPath"] == str(paths.HF_HOME)),
         {"name": ADAPTER_VOLUME, "mountPath": str(paths.ADAPTER_DIR)}],
        [served.repo, served.revision or "main", str(paths.ADAPTER_DIR), *ADAPTER_PATTERNS])


def build_vllm_container(model: CodexModel, base: ModelSource, served: ServedAdapter, cfg: OperatorConfig,
                         lora_rank: Optional[int] = None) -> dict[str, Any]:
    """vLLM's OpenAI server, with the adapter registered under the model's name."""
    resources = model.spec.resources
    _, extra_mounts = vllm_volumes(base, served)
    container: dict[str, Any] = {
        "name": names.SERVER_CONTAINER,
        "image": serving_image(model, cfg),
        "command": ["python3", "-m", "vllm.entrypoints.openai.api_server"],
        "args": vllm_args(model, base, served, lora_rank),
        "env": vllm_env(model, base),
        "ports": [{"name": "http", "containerPort": VLLM_PORT, "protocol": "TCP"}],
        "readinessProbe": health_probe(5, 3),
        "livenessProbe": health_probe(10, 6),
        # Downloading and loading a base model can take long; liveness counts only once /health answers.
        "startupProbe": health_probe(10, 180),
        "resources": resource_requirements(resources.cpu, resources.memory, resources.gpus,
                                           resources.gpu_resource_name, cfg.server_resources),
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": sorted(_base_mounts(base, served) + extra_mounts, key=lambda m: m["mountPath"]),
    }
    if cfg.image_pull_policy:
        container["imagePullPolicy"] = cfg.image_pull_policy
    return container


def build_vllm_pod(model: CodexModel, base: ModelSource, served: ServedAdapter, cfg: OperatorConfig,
                   lora_rank: Optional[int] = None) -> VllmPod:
    """Everything the vLLM runtime adds to the serving Deployment.

    Raises:
        VllmSpecError: an adapter with neither repo nor claim, or a rank over 512.
    """
    init_containers = [build_copy_base_container(model, base, cfg), build_fetch_container(model, base, served, cfg)]
    volumes, _ = vllm_volumes(base, served)
    return VllmPod(
        container=build_vllm_container(model, base, served, cfg, lora_rank),
        init_containers=[c for c in init_containers if c is not None],
        extra_volumes=volumes,
    )
