"""Helpers for the pipeline tests: a run spec over the sample data, laid out as the operator mounts it."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

from codex_api import CodexTrainingRun, parse

from codex_trainer.config import TrainerEnv

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_DATA = REPO_ROOT / "examples" / "data"

TINY_RUN: dict[str, Any] = {
    "apiVersion": "codex.dev/v1alpha1",
    "kind": "CodexTrainingRun",
    "metadata": {"name": "tiny", "namespace": "default"},
    "spec": {
        "baseModel": {"embedded": "tiny-llama"},
        "dataset": {"source": {"configMap": {"name": "codex-sample-data", "key": "code_pairs.jsonl"}}},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "training": {"maxSteps": 30, "learningRate": 0.01, "perDeviceBatchSize": 4, "maxSeqLength": 128,
                     "warmupSteps": 2, "scheduler": "constant_with_warmup"},
        "checkpointing": {"saveSteps": 10, "keepLast": 2},
        "evaluation": {"tasks": {"configMap": {"name": "codex-sample-data", "key": "eval_tasks.jsonl"}},
                       "samplesPerTask": 2, "k": [1, 2], "maxNewTokens": 12, "timeoutSeconds": 2,
                       "thresholds": {"syntaxOk": 0, "logicOk": 0, "securityOk": 0, "perfOk": 0}},
        "output": {"pvc": {"claimName": "artifacts", "path": "/tiny"}},
    },
}


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = value
    return result


def tiny_run(**spec_overrides: Any) -> CodexTrainingRun:
    return parse(CodexTrainingRun, merge(TINY_RUN, {"spec": spec_overrides}))


def stage(root: Path) -> Path:
    """The data root the operator would mount: the sample ConfigMap and an artifacts claim."""
    configmap = root / "data" / "configmap" / "codex-sample-data"
    configmap.mkdir(parents=True, exist_ok=True)
    for path in SAMPLE_DATA.glob("*.jsonl"):
        shutil.copy(path, configmap / path.name)
    (root / "data" / "pvc" / "artifacts").mkdir(parents=True, exist_ok=True)
    return root / "data"


def env_for(root: Path, models_dir: Path, token: str | None = None) -> TrainerEnv:
    return TrainerEnv(data_root=stage(root), checkpoint_dir=root / "checkpoints", scratch_dir=root / "scratch",
                      termination_message_path=root / "termination-log", models_dir=models_dir, hf_token=token,
                      run_name="tiny", run_namespace="default", image="test-image")


def trainer_environ(root: Path, models_dir: Path) -> dict[str, str]:
    """Process environment for ``codex-train run`` in a subprocess (what the Job sets)."""
    import os

    from codex_api import paths

    stage(root)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", paths.ENV_RUN_NAME, paths.ENV_RUN_NAMESPACE)}
    env.update({paths.ENV_DATA_ROOT: str(root / "data"), paths.ENV_CHECKPOINT_DIR: str(root / "checkpoints"),
                paths.ENV_MODELS_DIR: str(models_dir), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    return env
