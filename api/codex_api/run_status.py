"""CodexTrainingRunStatus: what the operator and the trainer observed, and its parts.

The trainer writes progress and the memory plan, and its termination report fills metrics, gates, artifact and
lineage (:mod:`codex_api.contract`); the operator writes the rest.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Optional

from pydantic import Field

from .base import ApiModel
from .common import CONDITIONS_FIELD, Condition
from .evaluation import Gates

Phase = Literal["Pending", "Running", "Evaluating", "Pushing", "Succeeded", "Failed"]


class Progress(ApiModel):
    """Live training progress, written by the trainer."""

    stage: Optional[Literal["prepare", "train", "evaluate", "save", "push", "report"]] = Field(
        None, description="stage is the trainer stage running now; evaluate and push map to the run's "
        "Evaluating and Pushing phases."
    )
    step: int = Field(0, description="step is the optimizer step reached. Defaults to 0.")
    total_steps: int = Field(0, description="totalSteps is the planned number of optimizer steps. Defaults to 0.")
    epoch: float = Field(0.0, description="epoch reached, fractional. Defaults to 0.")
    loss: Optional[float] = Field(None, description="loss is the latest training loss.")
    eta_seconds: Optional[int] = Field(None, description="etaSeconds is the estimated time to the end of training.")
    percent: int = Field(0, description="percent of training done, 0-100. Defaults to 0.", ge=0, le=100)
    updated_at: Optional[datetime] = Field(None, description="updatedAt is when the trainer last reported.")


class Metrics(ApiModel):
    """Results of training and evaluation."""

    train_loss: Optional[float] = Field(None, description="trainLoss is the mean training loss of the run.")
    eval_loss: Optional[float] = Field(None, description="evalLoss is the loss on the validation split.")
    perplexity: Optional[float] = Field(None, description="perplexity is exp(evalLoss).")
    pass_at_k: dict[str, float] = Field(
        default_factory=dict, description="passAtK maps \"pass@k\" to the unbiased estimate. Defaults to {}."
    )
    base_pass_at_k: Optional[dict[str, float]] = Field(
        None, description="basePassAtK maps \"pass@k\" to the base model's estimate (the adapter disabled) on the "
        "same tasks, samples, seeds and budget; it is scored once per base revision and task set, then read from a "
        "cache. Unset when evaluation.tasks is unset.",
    )
    pass_at_k_delta: Optional[dict[str, float]] = Field(
        None, description="passAtKDelta maps \"pass@k\" to passAtK minus basePassAtK: positive when the adapter "
        "does better than its base model. Unset when basePassAtK is.",
    )
    train_tokens: Optional[int] = Field(None, description="trainTokens is the number of tokens trained on.")


class Artifact(ApiModel):
    """Where the adapter was published."""

    hub_repo: Optional[str] = Field(None, description="hubRepo is the Hub repo id the adapter was pushed to.")
    commit_sha: Optional[str] = Field(None, description="commitSha is the Hub commit that holds the adapter.")
    revision: Optional[str] = Field(None, description="revision identifies the adapter: the commit SHA, or a "
                                    "content hash for PVC-only runs.")
    path: Optional[str] = Field(None, description="path is the adapter directory on the output PVC.")
    claim_name: Optional[str] = Field(None, description="claimName is the output PVC.")
    size_bytes: Optional[int] = Field(None, description="sizeBytes is the adapter's size on disk.")


class Lineage(ApiModel):
    """What produced the adapter, for reproducibility."""

    base_model_revision: Optional[str] = Field(None, description="baseModelRevision is the resolved base model.")
    dataset_sha256: Optional[str] = Field(None, description="datasetSha256 is the hash of the dataset bytes read.")
    config_hash: Optional[str] = Field(None, description="configHash is the sha256 of the rendered trainer spec.")
    image: Optional[str] = Field(None, description="image is the trainer image that ran.")


class MemoryBreakdown(ApiModel):
    """GiB on one device by what holds them (codex_trainer.memory_plan's terms)."""

    base_weights: float = Field(description="baseWeights is the frozen base model's share on the device.")
    working_weights: float = Field(description="workingWeights are weights gathered whole for compute (FSDP's "
                                   "units, a dequantized layer).")
    adapters: float = Field(description="adapters are the LoRA weights, gradients and AdamW moments.")
    activations: float = Field(description="activations are what autograd keeps for backward.")
    logits: float = Field(description="logits of one micro-batch, with the loss's fp32 copies.")
    overhead: float = Field(description="overhead is the CUDA context, workspaces and allocator slack.")


class MemoryPlan(ApiModel):
    """The per-device memory the trainer planned from the model's config.json before loading weights."""

    parameters: int = Field(description="parameters of the base model.")
    trainable_parameters: int = Field(description="trainableParameters are the LoRA adapter's.")
    world_size: int = Field(description="worldSize is the number of training processes (nodes x GPUs).")
    sharding: Literal["none", "fsdp"] = Field(description="sharding chosen (spec.training.sharding resolved).")
    per_device_gi_b: float = Field(alias="perDeviceGiB", description="perDeviceGiB is the estimated peak memory "
                                   "of one device.")
    device_gi_b: Optional[float] = Field(None, alias="deviceGiB", description="deviceGiB is one device's memory, "
                                         "when known.")
    device_memory_source: Literal["gpu", "spec", "operator", "unknown"] = Field(
        description="deviceMemorySource says where deviceGiB came from: the GPU itself, spec.resources.gpuMemoryGiB, "
        "the operator's default, or unknown (no GPU visible and none given: the plan is not enforced).")
    fits: Optional[bool] = Field(None, description="fits is whether perDeviceGiB is within deviceGiB; unset when "
                                 "deviceGiB is unknown.")
    breakdown_gi_b: MemoryBreakdown = Field(alias="breakdownGiB", description="breakdownGiB splits perDeviceGiB.")
    assumptions: list[str] = Field(default_factory=list, description="assumptions the estimate made, in words.",
                                   max_length=16)


class StageStatus(ApiModel):
    """One stage of a run with code tasks (codex_api.stages): train, sandbox, publish."""

    name: Literal["train", "sandbox", "publish"] = Field(description="name of the stage.")
    phase: Literal["Pending", "Running", "Succeeded", "Failed"] = Field(description="phase of the stage's Job.")
    job_name: Optional[str] = Field(None, description="jobName is the stage's Job, once created.")
    samples_done: Optional[int] = Field(None, description="samplesDone counts the programs run so far (sandbox).")
    samples_total: Optional[int] = Field(None, description="samplesTotal is how many programs the sandbox runs.")
    message: Optional[str] = Field(None, description="message says how the stage ended, or what it waits on.")


class CodexTrainingRunStatus(ApiModel):
    """CodexTrainingRunStatus is what the operator and the trainer observed."""

    phase: Optional[Phase] = Field(None, description="phase is Pending, Running, Evaluating, Pushing, Succeeded or "
                                   "Failed.")
    conditions: list[Condition] = Field(default_factory=list, **CONDITIONS_FIELD)
    observed_generation: Optional[int] = Field(None, description="observedGeneration is the last generation "
                                               "reconciled.")
    job_name: Optional[str] = Field(None, description="jobName is the training Job.")
    attempts: int = Field(0, description="attempts counts the trainer pods started. Defaults to 0.")
    start_time: Optional[datetime] = Field(None, description="startTime is when the Job was created.")
    completion_time: Optional[datetime] = Field(None, description="completionTime is when the run finished.")
    duration_seconds: Optional[float] = Field(None, description="durationSeconds from startTime to completionTime.")
    progress: Optional[Progress] = Field(None, description="progress of training, written by the trainer.")
    memory_plan: Optional[MemoryPlan] = Field(
        None, description="memoryPlan is the trainer's per-device memory estimate, written in its prepare stage.")
    stages: Optional[list[StageStatus]] = Field(
        None, description="stages of a run with evaluation tasks, in order: train, sandbox (the generated code runs "
        "with no credential and no network), publish. Unset for a run without tasks, which runs as one Job.",
        max_length=3,
    )
    metrics: Optional[Metrics] = Field(None, description="metrics from training and evaluation.")
    gates: Optional[Gates] = Field(  # type: ignore[valid-type]
        None, description="gates are the quality gates and their verdict."
    )
    artifact: Optional[Artifact] = Field(None, description="artifact is the published adapter.")
    lineage: Optional[Lineage] = Field(None, description="lineage records what produced the adapter.")
    message: Optional[str] = Field(None, description="message is a one-line summary of the state.")
