"""The hand-off: what the train stage leaves in the work directory for the sandbox and publish stages.

One JSON file (``codex_api.stages.HANDOFF_FILE``'s name in the work directory), written atomically
(a temporary file, then a rename) after the adapter beside it, so a stage that finds it finds the
adapter complete. Version :data:`VERSION`, snake_case keys; the ``metrics`` and ``lineage`` sections
are in their wire form (camelCase), as in the termination report:

==================  =============================================================================
key                 what it holds
==================  =============================================================================
version             :data:`VERSION`; another version is refused
tasks               the evaluation tasks: task_id, prompt, test, entry_point (HumanEval format)
completions         the tuned adapter's completions, one list per task, in task order
base_completions    the base model's, likewise; null when the base-score cache already holds their
                    outcomes (``baseline``)
baseline            the base-score cache: its directory and the :func:`baseline.baseline_inputs`
                    its key is the hash of; null without tasks
timeout_seconds     each program's wall-clock limit (spec.evaluation.timeoutSeconds)
metrics             trainLoss, evalLoss, perplexity, trainTokens so far
lineage             the adapter's lineage
results             results.json as far as the train stage got (run, train, data, timings, ...)
adapter             the adapter's sha256 (weights and config) and the folder's size in bytes
==================  =============================================================================

The samples are the tuned ones, task by task, then the base ones: the order of the sandbox's statuses.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Literal, Optional

from codex_api import stages
from codex_api.run_status import Lineage, Metrics
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .data import Task
from .errors import HandoffError
from .programs import Sample, flatten

VERSION = 1
# How many of an invalid file's problems its error names.
PROBLEMS_SHOWN = 3


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaselineRef(_Section):
    directory: str = Field(description="the cache directory, as the train stage's mounts name it")
    inputs: dict[str, Any] = Field(description="baseline_inputs(): the cache key is their hash")


class AdapterRef(_Section):
    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)


class Handoff(_Section):
    """The hand-off file's content; see the module docstring."""

    version: Literal[1] = VERSION
    tasks: list[Task]
    completions: list[list[str]]
    base_completions: Optional[list[list[str]]] = None
    baseline: Optional[BaselineRef] = None
    timeout_seconds: float = Field(gt=0)
    metrics: Metrics
    lineage: Lineage
    results: dict[str, Any]
    adapter: AdapterRef

    @model_validator(mode="after")
    def _one_group_per_task(self) -> "Handoff":
        for name in ("completions", "base_completions"):
            groups = getattr(self, name)
            if groups is not None and len(groups) != len(self.tasks):
                raise ValueError(f"{len(groups)} groups of {name} for {len(self.tasks)} tasks")
        if self.base_completions is not None and self.baseline is None:
            raise ValueError("base_completions without the baseline cache to write their outcomes to")
        return self

    def tuned_samples(self) -> list[Sample]:
        return flatten(self.tasks, self.completions)

    def base_samples(self) -> list[Sample]:
        return flatten(self.tasks, self.base_completions or [])

    def samples(self) -> list[Sample]:
        """Every sample the sandbox runs, in the order of its statuses: the tuned ones, then the base ones."""
        return self.tuned_samples() + self.base_samples()

    def write(self, path: Path) -> None:
        """Atomically: a reader sees the whole file or none."""
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(self.model_dump_json(by_alias=True))
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def handoff_file(work_dir: Path) -> Path:
    return work_dir / stages.HANDOFF_FILE.name


def adapter_dir(work_dir: Path) -> Path:
    return work_dir / stages.WORK_ADAPTER_DIR.name


def read_handoff(path: Path) -> Handoff:
    """The hand-off at ``path``, or HandoffError in one line. The line never quotes the file's content: the
    completions in it are hostile, and the message reaches logs and status."""
    try:
        text = path.read_bytes()
    except OSError as error:
        raise HandoffError(f"the train stage's hand-off {path} cannot be read ({error.strerror}); "
                           "re-create the run") from None
    try:
        return Handoff.model_validate_json(text)
    except ValidationError as error:
        problems = [f"{'.'.join(map(str, item['loc'])) or '(root)'}: {item['msg']}"
                    for item in error.errors(include_url=False, include_context=False, include_input=False)]
        shown = "; ".join(problems[:PROBLEMS_SHOWN]) + ("; ..." if len(problems) > PROBLEMS_SHOWN else "")
        raise HandoffError(f"the train stage's hand-off {path} is not a version-{VERSION} hand-off: {shown}; "
                           "re-create the run") from None
