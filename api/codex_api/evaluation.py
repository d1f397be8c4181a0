"""spec.evaluation and status.gates: what is measured after training, and the verdict against thresholds.

``Thresholds`` and ``Gates`` are built from the gate registry (:mod:`codex_api.gates`) when this
module is imported, one field per registered gate, so a gate added there reaches the CRD, the
trainer and the operator without an edit here.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

from pydantic import Field, create_model

from .base import ApiModel, Rule
from .common import NAME_PATTERN, QUANTITY_PATTERN, DataSource
from .gates import GATES

# The CRD carries no defaults, so CEL rules that read an optional field fall back to this one explicitly.
DEFAULT_SAMPLES_PER_TASK = 5


def _threshold_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for gate in GATES:
        threshold = gate.threshold
        annotation = float if threshold.default is not None else Optional[float]
        fields[threshold.attr] = (annotation, Field(threshold.default, description=threshold.field_description(),
                                                    **threshold.bounds))
    return fields


Thresholds = create_model(
    "Thresholds",
    __base__=ApiModel,
    __module__=__name__,
    __doc__="Quality gates: the share of generated completions that must pass each check, in [0, 1].",
    **_threshold_fields(),
)


class Sandbox(ApiModel):
    """The sandbox stage's pod, where the generated programs run: CPU only, no credential, no network."""

    runtime_class_name: Optional[str] = Field(
        None, description="runtimeClassName of the sandbox pod, such as gVisor's or Kata's, where the cluster has one. "
        "Defaults to the operator's (Helm sandbox.runtimeClassName), else the cluster's default runtime.",
        pattern=NAME_PATTERN, max_length=253,
    )
    cpu: str = Field("2", description="cpu request and limit of the sandbox pod; the programs run on that many "
                     "processes. Defaults to \"2\".", pattern=QUANTITY_PATTERN, max_length=64)
    memory: str = Field("4Gi", description="memory request and limit of the sandbox pod. Defaults to \"4Gi\".",
                        pattern=QUANTITY_PATTERN, max_length=64)


class Evaluation(ApiModel):
    """Evaluation after training: loss and perplexity, then pass@k on code tasks in a sandbox."""

    __rules__ = (
        Rule(
            cel="!has(self.k) || self.k.all(k, k <= (has(self.samplesPerTask) ? self.samplesPerTask : "
            f"{DEFAULT_SAMPLES_PER_TASK}))",
            message="every k must be at most samplesPerTask",
            check=lambda m: all(k <= m.samples_per_task for k in m.k),
            field="k",
        ),
    )

    tasks: Optional[DataSource] = Field(
        None, description="tasks are HumanEval-format records {task_id, prompt, test, entry_point}. Unset skips "
        "pass@k and the code gates; loss and perplexity are still computed.",
    )
    samples_per_task: int = Field(
        DEFAULT_SAMPLES_PER_TASK, description=f"samplesPerTask is n in pass@k. Defaults to {DEFAULT_SAMPLES_PER_TASK}.",
        ge=1, le=200,
    )
    k: list[Annotated[int, Field(ge=1, le=200)]] = Field(
        default_factory=lambda: [1], description="k lists the k values reported as pass@k. Defaults to [1].",
        min_length=1, max_length=8,
    )
    max_new_tokens: int = Field(256, description="maxNewTokens per completion. Defaults to 256.", ge=1, le=8192)
    temperature: float = Field(
        0.8, description="temperature for sampling completions; 0 means greedy. Defaults to 0.8.", ge=0, le=2
    )
    timeout_seconds: float = Field(
        5.0, description="timeoutSeconds is the wall-time budget per completion's test run; perfOk counts those "
        "within it. Defaults to 5.", gt=0, le=600,
    )
    thresholds: Thresholds = Field(  # type: ignore[valid-type]
        default_factory=Thresholds, description="thresholds are the quality gates."
    )
    sandbox: Sandbox = Field(
        default_factory=Sandbox, description="sandbox is the pod that runs the generated programs, a stage of its own "
        "between training and publishing (see the README's How it works). Used only when tasks is set.",
    )


class Gate(ApiModel):
    """One quality gate."""

    value: float = Field(description="value measured: a share in [0, 1] for a per-sample gate, the metric "
                         "itself (such as perplexity) for a metric gate.")
    threshold: float = Field(description="threshold from spec.evaluation.thresholds.")
    passed: bool = Field(description="passed is true when value meets threshold: at least it for a share, at "
                         "most it for a maximum such as maxPerplexity.")
    base: Optional[float] = Field(
        None, description="base is the same gate measured on the base model (the adapter disabled) over the same "
        "tasks, samples, seeds and budget. Unset for a gate not measured on completions (perplexity, "
        "minImprovement) and when evaluation.tasks is unset.",
    )
    delta: Optional[float] = Field(None, description="delta is value minus base: positive when the adapter scores "
                                   "higher than its base model. Unset when base is.")


Gates = create_model(
    "Gates",
    __base__=ApiModel,
    __module__=__name__,
    __doc__="All gates and their verdict.",
    passed=(bool, Field(description="passed is true when every evaluated gate passed.")),
    **{gate.attr: (Optional[Gate], Field(None, description=gate.description)) for gate in GATES},
)
