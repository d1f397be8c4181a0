"""Pure translations from the spec to peft and TRL configuration (no model, no I/O), so they are table-tested."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

from codex_api.training_run import IMMUTABLE_FIELDS, CodexTrainingRunSpec, Lora, Training

DEFAULT_WARMUP_RATIO = 0.03


def precision_flags(precision: str, cuda: bool, bf16_supported: bool) -> tuple[dict[str, bool], Optional[str]]:
    """TrainingArguments' bf16/fp16 flags for ``precision``, and a note when it had to fall back.

    ``bf16_supported``: this device computes in bf16 natively (the GPU's, or on CPU AVX512-BF16 or
    AMX, where the Trainer then trains under CPU autocast); :func:`codex_trainer.modeling.native_bf16`.
    """
    if precision == "fp32":
        return {"bf16": False, "fp16": False}, None
    if not cuda:
        if precision == "bf16" and bf16_supported:
            return {"bf16": True, "fp16": False}, None
        why = "this CPU has no native bf16 (AVX512-BF16 or AMX)" if precision == "bf16" else "no GPU is visible"
        return {"bf16": False, "fp16": False}, f"{precision} requested but {why}: training in fp32 on CPU"
    if precision == "bf16" and not bf16_supported:
        return {"bf16": False, "fp16": True}, "bf16 requested but this GPU does not support it: training in fp16"
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}, None


def warmup(training: Training) -> float:
    """TrainingArguments.warmup_steps: an absolute count, or a ratio of the total when below 1."""
    if training.warmup_steps is not None:
        return training.warmup_steps
    return training.warmup_ratio if training.warmup_ratio is not None else DEFAULT_WARMUP_RATIO


def lora_kwargs(lora: Lora) -> dict[str, Any]:
    """peft.LoraConfig arguments; ``["all-linear"]`` becomes peft's "all-linear" shorthand."""
    targets: Any = "all-linear" if lora.target_modules == ["all-linear"] else list(lora.target_modules)
    return {"r": lora.r, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout, "target_modules": targets,
            "bias": "none", "task_type": "CAUSAL_LM"}


def common_kwargs(spec: CodexTrainingRunSpec, checkpoint_dir: Path, cuda: bool, bf16_supported: bool) -> dict[str, Any]:
    """The TrainingArguments fields shared by SFTConfig and DPOConfig."""
    training, checkpointing = spec.training, spec.checkpointing
    flags, _ = precision_flags(training.precision, cuda, bf16_supported)
    return {
        "output_dir": str(checkpoint_dir),
        "per_device_train_batch_size": training.per_device_batch_size,
        "per_device_eval_batch_size": training.per_device_batch_size,
        "gradient_accumulation_steps": training.gradient_accumulation_steps,
        "num_train_epochs": training.epochs,
        "max_steps": training.max_steps if training.max_steps is not None else -1,
        "learning_rate": training.learning_rate,
        "lr_scheduler_type": training.scheduler,
        "warmup_steps": warmup(training),
        "weight_decay": training.weight_decay,
        "max_grad_norm": training.max_grad_norm,
        "seed": training.seed,
        "data_seed": training.seed,
        "use_cpu": not cuda,
        # Checkpoints every saveSteps; CheckpointCallback rotates them only once a newer one is complete.
        "save_strategy": "steps",
        "save_steps": checkpointing.save_steps,
        "save_total_limit": None,
        "eval_strategy": "no",
        "logging_steps": 1,
        "report_to": "none",
        "disable_tqdm": True,
        "log_level": "warning",
        "include_num_input_tokens_seen": "non_padding",
        "dataloader_num_workers": 0,
        "ddp_find_unused_parameters": False,
        **flags,
        # Always explicit: TRL's configs default to checkpointing on, which costs a third more compute.
        # transformers 5 calls it activation_checkpointing (gradient_checkpointing is the deprecated alias).
        "activation_checkpointing": training.gradient_checkpointing,
        "activation_checkpointing_kwargs": {"use_reentrant": False} if training.gradient_checkpointing else None,
    }


def sharding_kwargs(training: Training, sharding: str, cuda: bool) -> dict[str, Any]:
    """TrainingArguments' FSDP fields for spec.training.sharding resolved to ``sharding`` (planning.py).

    FSDP2 full shard through accelerate: each decoder layer is a unit (the model's own
    ``_no_split_modules``), weights are resharded after forward, and checkpoints are sharded, saved and
    loaded with torch.distributed.checkpoint. Activation checkpointing is FSDP's own (the Trainer's
    would add an all-gather per layer in backward). On a GPU only rank 0 reads the weights from disk
    and broadcasts them (``cpu_ram_efficient_loading``): four ranks of a 70B model would hold 560 GB of
    host memory otherwise.
    """
    if sharding != "fsdp":
        return {}
    return {
        "fsdp": True,
        "fsdp_config": {
            "version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "reshard_after_forward": True,
            "state_dict_type": "SHARDED_STATE_DICT", "cpu_offload": training.cpu_offload,
            "activation_checkpointing": training.gradient_checkpointing, "cpu_ram_efficient_loading": cuda,
        },
        "activation_checkpointing": False,
        "activation_checkpointing_kwargs": None,
    }


def sft_kwargs(spec: CodexTrainingRunSpec, cuda: bool = True) -> dict[str, Any]:
    """SFTConfig's own fields: packing (best-fit, no cross-attention) and the loss mask per data format."""
    training, data_format = spec.training, spec.dataset.format
    kwargs: dict[str, Any] = {
        "max_length": training.max_seq_length,
        "packing": training.packing,
        "packing_strategy": "bfd",
        "dataset_text_field": "text",
        "completion_only_loss": training.completion_only_loss if data_format == "prompt-completion" else None,
        "assistant_only_loss": training.completion_only_loss and data_format == "chat",
        # Packed batches are padding-free (one flattened row, no pad tokens), where "non_padding"
        # would miscount: it drops every eos, because the pad token is eos.
        "include_num_input_tokens_seen": "all" if training.packing else "non_padding",
    }
    if data_format == "text":
        kwargs["completion_only_loss"] = False
    if training.packing and not cuda and training.per_device_batch_size > 1:
        kwargs.update(cpu_packed_microbatches(training))
    return kwargs


def cpu_packed_microbatches(training: Training) -> dict[str, Any]:
    """On CPU, one packed row per micro-batch, accumulated to the same effective batch.

    Padding-free batches flatten all rows into one sequence, and CPU attention (SDPA with a block
    mask) then costs batch*maxSeqLength squared; row by row it is maxSeqLength squared per row.
    Measured ~1.3x fewer CPU-seconds per token for SmolLM2 at 4 x 256. Loss and gradients are the
    same: the Trainer normalises by the tokens of the whole accumulated batch. GPUs keep the
    flattened batch, which varlen flash attention handles without the quadratic cost.
    """
    return {"per_device_train_batch_size": 1, "per_device_eval_batch_size": 1,
            "gradient_accumulation_steps": training.per_device_batch_size * training.gradient_accumulation_steps}


def dpo_kwargs(spec: CodexTrainingRunSpec) -> dict[str, Any]:
    return {"beta": spec.training.dpo_beta, "max_length": spec.training.max_seq_length}


def canonical_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def training_config_hash(spec: CodexTrainingRunSpec) -> str:
    """Hash of the fields that define what is trained, which is what a checkpoint means: a resume whose
    hash differs is warned about. They are the fields the CRD makes immutable once a run starts."""
    wire = spec.to_wire()
    return canonical_hash({name: wire.get(name) for name in IMMUTABLE_FIELDS})
