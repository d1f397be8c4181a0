"""Where things live inside the trainer and server containers.

The operator's builders mount volumes at these paths and the trainer/server read
from them, so both sides import this one module instead of agreeing on strings.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from .common import ConfigMapKeyRef, PvcPath

# The rendered CodexTrainingRun (apiVersion/kind/metadata/spec) the trainer runs.
SPEC_DIR = PurePosixPath("/etc/codex")
SPEC_FILE = SPEC_DIR / "run.yaml"
# Every ConfigMap and PVC a spec references is mounted under the data root.
DATA_ROOT = PurePosixPath("/var/run/codex/data")
CHECKPOINT_DIR = PurePosixPath("/var/run/codex/checkpoints")
# Scratch space: the root filesystem is read-only.
SCRATCH_DIR = PurePosixPath("/var/run/codex/scratch")
HF_HOME = PurePosixPath("/var/run/codex/hf-home")
# Models baked into the trainer image (see Dockerfile.trainer `codex-train prepare-embedded`).
EMBEDDED_MODELS_DIR = PurePosixPath("/opt/codex/models")
TERMINATION_MESSAGE_PATH = PurePosixPath("/dev/termination-log")
# An embedded base model for a runtime image that lacks it (vLLM): copied in by an init container.
BASE_MODEL_DIR = PurePosixPath("/var/run/codex/base-model")
# The served adapter, fetched by the vLLM init container or mounted from a PVC.
ADAPTER_DIR = PurePosixPath("/var/run/codex/adapter")

# Environment variables set by the operator and read by the trainer and server.
ENV_RUN_NAME = "CODEX_RUN_NAME"
ENV_RUN_NAMESPACE = "CODEX_RUN_NAMESPACE"
ENV_DATA_ROOT = "CODEX_DATA_ROOT"
ENV_CHECKPOINT_DIR = "CODEX_CHECKPOINT_DIR"
ENV_MODELS_DIR = "CODEX_MODELS_DIR"
ENV_IMAGE = "CODEX_IMAGE"
# One GPU's memory in GiB for the trainer's memory plan when it cannot read the device (Helm trainer.gpuMemoryGiB).
ENV_GPU_MEMORY_GIB = "CODEX_GPU_MEMORY_GIB"
ENV_HF_TOKEN = "HF_TOKEN"
ENV_API_KEY = "CODEX_API_KEY"


def configmap_dir(name: str, data_root: PurePosixPath = DATA_ROOT) -> PurePosixPath:
    return data_root / "configmap" / name


def configmap_file(ref: ConfigMapKeyRef, data_root: PurePosixPath = DATA_ROOT) -> PurePosixPath:
    return configmap_dir(ref.name, data_root) / ref.key


def pvc_dir(claim_name: str, data_root: PurePosixPath = DATA_ROOT) -> PurePosixPath:
    return data_root / "pvc" / claim_name


def pvc_file(ref: PvcPath, data_root: PurePosixPath = DATA_ROOT) -> PurePosixPath:
    return pvc_dir(ref.claim_name, data_root) / ref.path.lstrip("/")
