"""The memory plan of one run: its inputs from the spec, sharding resolved, and what to change when it cannot fit.

:mod:`codex_trainer.memory_plan` does the arithmetic; this module ties it to a CodexTrainingRun. The
trainer calls :func:`plan_run` in its prepare stage with the model's ``config.json`` (read before
any weight is downloaded), the run's world size and the device's memory (:func:`device_memory`).
The result goes to ``status.memoryPlan``; a run that cannot fit stops there with an InvalidSpec
message naming the spec fields that would make it fit (:func:`refusal`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Optional

from codex_api import paths
from codex_api.run_status import MemoryPlan as MemoryPlanStatus
from codex_api.training_run import CodexTrainingRunSpec

from .errors import InvalidSpecError
from .launcher import launched, topology_from_env
from .logs import event
from .memory_plan import GIB, SHARDINGS, MemoryPlan, ModelShape, PlanInputs, plan

# The operator's default device memory for planning (Helm trainer.gpuMemoryGiB), set on the trainer's pod.
ENV_GPU_MEMORY_GIB = paths.ENV_GPU_MEMORY_GIB


@dataclass(frozen=True)
class DeviceMemory:
    """One device's memory in GiB and where the number came from (status.memoryPlan.deviceMemorySource)."""

    gib: Optional[float]
    source: str  # gpu | spec | operator | unknown


def device_memory(spec: CodexTrainingRunSpec, env: Mapping[str, str] = os.environ,
                  gpu_total_bytes: Optional[Callable[[], Optional[int]]] = None) -> DeviceMemory:
    """The GPU's own total when one is visible; else spec.resources.gpuMemoryGiB; else the operator's default."""
    total = (gpu_total_bytes or _gpu_total_bytes)()
    if total:
        return DeviceMemory(total / GIB, "gpu")
    if spec.resources.gpu_memory_gib is not None:
        return DeviceMemory(spec.resources.gpu_memory_gib, "spec")
    raw = env.get(ENV_GPU_MEMORY_GIB, "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            raise InvalidSpecError(f"env {ENV_GPU_MEMORY_GIB}: expected GiB as a number, got {raw!r}") from None
        if value > 0:
            return DeviceMemory(value, "operator")
    return DeviceMemory(None, "unknown")


def _gpu_total_bytes() -> Optional[int]:
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory


def inputs_for(spec: CodexTrainingRunSpec, config: Mapping[str, Any], world_size: int,
               device_gib: Optional[float], sharding: Optional[str] = None) -> PlanInputs:
    """The plan's inputs for ``spec`` on a model with ``config`` (sharding as requested unless given)."""
    training, lora = spec.training, spec.lora
    requested = sharding or ("fsdp" if training.sharding == "auto" and training.cpu_offload else training.sharding)
    return PlanInputs(
        shape=ModelShape.from_config(config), dtype=training.precision, quantization=lora.quantization,
        lora_r=lora.r, lora_targets=tuple(lora.target_modules), lora_dropout=lora.dropout,
        sharding="none" if requested == "auto" else requested, world_size=world_size,
        micro_batch=training.per_device_batch_size, seq_len=training.max_seq_length,
        gradient_checkpointing=training.gradient_checkpointing, cpu_offload=training.cpu_offload,
        device_memory_gib=device_gib)


def choose_sharding(requested: str, inputs: PlanInputs) -> str:
    """spec.training.sharding resolved: "auto" is "none" unless the plan says data parallel does not fit one
    device and there is more than one process to shard over, or CPU offload (which is FSDP's) is asked for."""
    if requested in SHARDINGS:
        return requested
    if requested != "auto":
        raise InvalidSpecError(f"spec.training.sharding: {requested!r} is not one of auto, {', '.join(SHARDINGS)}")
    if inputs.cpu_offload:
        return "fsdp"
    data_parallel = plan(replace(inputs, sharding="none"))
    return "fsdp" if inputs.world_size > 1 and data_parallel.fits is False else "none"


# What a user can change, each as the spec field's words and the runs it would give, nearest first.
CHANGES: tuple[tuple[str, Callable[[PlanInputs], list[PlanInputs]]], ...] = (
    ("set spec.training.sharding: fsdp",
     lambda i: [replace(i, sharding="fsdp")] if i.sharding == "none" and i.world_size > 1 else []),
    ("raise spec.resources.gpusPerNode (or spec.resources.nodes) to {world_size} GPUs in all "
     "with spec.training.sharding: fsdp",
     lambda i: [replace(i, sharding="fsdp", world_size=i.world_size * 2**k) for k in range(1, 13)]),
    ("set spec.lora.quantization: 4bit",
     lambda i: [] if i.quantization == "4bit" else [replace(i, quantization="4bit")]),
    ("lower spec.training.perDeviceBatchSize to {micro_batch}",
     lambda i: [replace(i, micro_batch=i.micro_batch >> k) for k in range(1, i.micro_batch.bit_length())]),
    ("lower spec.training.maxSeqLength to {seq_len}",
     lambda i: [replace(i, seq_len=i.seq_len >> k) for k in range(1, i.seq_len.bit_length())]),
    ("turn on spec.training.gradientCheckpointing",
     lambda i: [] if i.gradient_checkpointing else [replace(i, gradient_checkpointing=True)]),
)


def _suggestion(words: str, candidates: list[PlanInputs], current_gib: float) -> Optional[str]:
    """The nearest candidate that fits, else the nearest one if it lowers memory at all, else nothing."""
    for candidate in candidates:
        if (candidate_plan := plan(candidate)).fits:
            return f"{words.format(**vars(candidate))} ({candidate_plan.per_device_gib:.1f} GiB)"
    if candidates and (nearest := plan(candidates[0])).per_device_gib < current_gib:
        return f"{words.format(**vars(candidates[0]))} ({nearest.per_device_gib:.1f} GiB, not enough alone)"
    return None


def refusal(memory_plan: MemoryPlan, inputs: PlanInputs) -> Optional[str]:
    """None unless the plan knows the run does not fit; else why, with the spec fields that would lower it."""
    if memory_plan.fits is not False:
        return None
    suggestions = [text for words, candidates in CHANGES
                   if (text := _suggestion(words, candidates(inputs), memory_plan.per_device_gib))]
    fixes = ", or ".join([", ".join(suggestions[:-1]), suggestions[-1]] if len(suggestions) > 1 else suggestions)
    return (f"spec.resources: the run needs {memory_plan.per_device_gib:.1f} GiB per device and the device has "
            f"{memory_plan.device_gib:.1f} GiB: {fixes or 'no spec field the memory plan knows of lowers it'}")


@dataclass(frozen=True)
class RunPlan:
    """The plan of one run: the sharding it trains with, and status.memoryPlan (None: not planned)."""

    sharding: str
    status: Optional[dict[str, Any]]


def plan_run(spec: CodexTrainingRunSpec, config: Mapping[str, Any], world_size: int, device: DeviceMemory) -> RunPlan:
    """Resolve spec.training.sharding and plan the run's memory; InvalidSpecError when it cannot fit.

    A model the plan cannot count is not planned: a config.json that is not a Llama-style decoder's, or
    targetModules that are not its Linear layers (peft may still adapt them). "auto" is then data parallel
    (FSDP with cpuOffload), and the run goes ahead as asked.
    """
    try:
        inputs = inputs_for(spec, config, world_size, device.gib)
    except InvalidSpecError as error:
        sharding = "fsdp" if spec.training.sharding == "fsdp" or spec.training.cpu_offload else "none"
        event("prepare", "memory_plan.skipped", level=logging.WARNING, reason=str(error), sharding=sharding)
        return RunPlan(sharding, None)
    sharding = choose_sharding(spec.training.sharding, inputs)
    inputs = replace(inputs, sharding=sharding)
    memory_plan = plan(inputs)
    status = MemoryPlanStatus.model_validate(
        {**memory_plan.to_status(), "worldSize": world_size, "deviceMemorySource": device.source}).to_wire()
    event("prepare", "memory_plan", **{k: v for k, v in status.items() if k != "assumptions"})
    message = refusal(memory_plan, inputs)
    if message:
        raise PlanRefused(message, status)
    return RunPlan(sharding, status)


class PlanRefused(InvalidSpecError):
    """The run cannot fit its devices; ``status`` is the plan that says so, for status.memoryPlan."""

    def __init__(self, message: str, status: dict[str, Any]):
        super().__init__(message)
        self.status = status


def prepare(spec: CodexTrainingRunSpec, env: Any, record: Callable[[str, dict[str, Any]], None]) -> RunPlan:
    """The trainer's prepare step: the plan from config.json alone (no weights fetched yet), recorded as
    status.memoryPlan by rank 0; a run that cannot fit stops here (InvalidSpec, naming the fields to change)."""
    from . import modeling

    config = modeling.model_config(spec.base_model, token=env.hf_token, models_dir=env.models_dir,
                                   data_root=env.data_root)
    world_size = int(os.environ.get("WORLD_SIZE") or topology_from_env(os.environ).world_size)  # torchrun's first
    rank0 = os.environ.get("RANK", "0") == "0"
    try:
        run_plan = plan_run(spec, config, world_size, device_memory(spec))
    except PlanRefused as refused:
        if rank0:
            record("memoryPlan", refused.status)
        raise
    if run_plan.status is not None and rank0:
        record("memoryPlan", run_plan.status)
    if run_plan.sharding == "fsdp" and not launched(os.environ):
        raise InvalidSpecError("spec.training.sharding: fsdp needs a process group: run it with `codex-train run` "
                               "(which starts torchrun) or under torchrun, or set sharding: none")
    return run_plan
