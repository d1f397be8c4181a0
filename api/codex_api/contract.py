"""The contract between the trainer and the operator: exit codes and the termination report.

The trainer exits with one of these codes and writes a :class:`TrainerReport` (JSON, under
4 KiB) to the container's termination-message path. The operator's Job builder turns the
non-retryable codes into a podFailurePolicy, and its status code reads the report back
into status.metrics, gates, artifact and lineage.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from .base import ApiModel
from .evaluation import Gates
from .run_status import Artifact, Lineage, Metrics

EXIT_OK = 0
# Bad spec or bad data: retrying cannot help (podFailurePolicy FailJob).
EXIT_INVALID = 42
# Training worked but the quality gates failed: the adapter is kept, not promoted (FailJob).
EXIT_GATES_NOT_MET = 43
# SIGTERM (preemption, node drain): a checkpoint was saved; retry resumes from it.
EXIT_PREEMPTED = 44
# Network, Hub 5xx, OOM-adjacent failures: retry.
EXIT_TRANSIENT = 45

NON_RETRYABLE_EXIT_CODES = (EXIT_INVALID, EXIT_GATES_NOT_MET)
REPORT_MAX_BYTES = 4096

# Reasons the trainer puts in its report; the operator copies them into conditions.
REASON_SUCCEEDED = "Succeeded"
# The train stage of a staged run (codex_api.stages) ended well: the sandbox comes next.
REASON_TRAINED = "Trained"
REASON_INVALID_SPEC = "InvalidSpec"
REASON_INVALID_DATA = "InvalidData"
REASON_GATES_NOT_MET = "GatesNotMet"
REASON_PREEMPTED = "Preempted"
REASON_TRANSIENT = "TransientError"


class TrainerReport(ApiModel):
    """The trainer's termination message."""

    phase: Literal["Succeeded", "Failed"] = Field(description="phase is how the trainer ended.")
    reason: str = Field(description="reason is a CamelCase word (Succeeded, GatesNotMet, InvalidData, ...).")
    message: str = Field("", description="message is one line for humans. Defaults to empty.")
    metrics: Optional[Metrics] = Field(None, description="metrics from training and evaluation.")
    gates: Optional[Gates] = Field(None, description="gates and their verdict.")
    artifact: Optional[Artifact] = Field(None, description="artifact where the adapter was published.")
    lineage: Optional[Lineage] = Field(None, description="lineage of the adapter.")
