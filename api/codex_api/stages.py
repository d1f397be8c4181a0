"""A run with code tasks runs as three stages, each with the least privilege it needs.

====================  ==============================================================================
stage                 what it does, and what it holds
====================  ==============================================================================
``train``             the GPU Job: trains, evaluates loss and perplexity, generates the tuned (and,
                      unless cached, the base) completions while the model is loaded, and writes them
                      with the adapter to the run's work volume (:data:`HANDOFF_FILE`). The base
                      model's read token only; the output PVC read-only (the base-score cache).
``sandbox``           a CPU-only Job that executes every generated program (completion plus the
                      task's test) and returns one status per sample in its termination message
                      (:class:`SandboxReport`). No credential (no token, no ServiceAccount token, no
                      Secret), a deny-all NetworkPolicy, Pod Security ``restricted``, a read-only root
                      filesystem, the work volume read-only, an emptyDir scratch, and an optional
                      runtimeClassName (gVisor, Kata).
``publish``           static checks (syntax, bandit), the gate verdict, the base comparison, then the
                      adapter to the output PVC and, only when the gates pass, to the Hub with the
                      write token. The sandbox's statuses reach it through :data:`ENV_SANDBOX_RESULTS`,
                      set by the operator from the sandbox pod's termination message.
====================  ==============================================================================

A run without ``spec.evaluation.tasks`` runs no generated code: one Job does it all, as before.
The operator (builders/stages.py, sync_runs.py) and the trainer (codex_trainer/stages.py) both
read this module.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from pathlib import PurePosixPath
from typing import Any, Literal, Sequence

from pydantic import Field

from .base import ApiModel

TRAIN, SANDBOX, PUBLISH = "train", "sandbox", "publish"
STAGES = (TRAIN, SANDBOX, PUBLISH)

# The run's work volume (an operator-created PVC): train writes it, sandbox and publish read it.
WORK_DIR = PurePosixPath("/var/run/codex/work")
HANDOFF_FILE = WORK_DIR / "evaluation.json"
WORK_ADAPTER_DIR = WORK_DIR / "adapter"
# The sandbox pod's termination message (a SandboxReport), handed to the publish Job.
ENV_SANDBOX_RESULTS = "CODEX_SANDBOX_RESULTS"
# The JSON log line the sandbox prints as samples finish; the operator reads the newest one from
# the pod's log to show progress (the sandbox has no credential to write status itself).
PROGRESS_EVENT = "sandbox.progress"
# How a sample ended, one character each: executor statuses (sandbox.SandboxResult.status).
STATUS_CODES = {"passed": "p", "failed": "f", "timeout": "t", "killed": "k"}
CODE_STATUSES = {code: status for status, code in STATUS_CODES.items()}
# The kubelet keeps at most 4096 bytes of a termination message.
MAX_MESSAGE_BYTES = 4096


def is_staged(spec: Any) -> bool:
    """Whether a run runs generated code, and so runs as stages: it has evaluation tasks."""
    return spec.evaluation.tasks is not None


class ResultsError(ValueError):
    """A sandbox report that is not what the sandbox writes: refused, never half-read."""


class SandboxReport(ApiModel):
    """The sandbox's termination message: one status per sample, in the hand-off's sample order."""

    stage: Literal["sandbox"] = Field("sandbox", description="stage is always sandbox.")
    samples: int = Field(description="samples is how many statuses ``results`` holds.", ge=0)
    results: str = Field(description="results is zlib-compressed, base64-encoded STATUS_CODES, one per sample.")

    @classmethod
    def of(cls, statuses: Sequence[str]) -> "SandboxReport":
        codes = "".join(STATUS_CODES[status] for status in statuses).encode("ascii")
        return cls(samples=len(statuses), results=base64.b64encode(zlib.compress(codes, 9)).decode("ascii"))

    def message(self) -> str:
        """The termination message; ResultsError when it would not fit (the kubelet would cut it)."""
        text = self.model_dump_json(by_alias=True)
        if len(text.encode()) > MAX_MESSAGE_BYTES:
            raise ResultsError(f"{self.samples} sample statuses do not fit in a {MAX_MESSAGE_BYTES}-byte termination "
                               "message; lower spec.evaluation.samplesPerTask or the number of tasks")
        return text

    @classmethod
    def read(cls, text: str, expected: int) -> list[str]:
        """The statuses from a termination message, exactly ``expected`` of them, or ResultsError."""
        try:
            report = cls.model_validate_json(text)
            # At most one status more than expected is inflated: a crafted message cannot be a zip bomb.
            codes = zlib.decompressobj().decompress(base64.b64decode(report.results, validate=True), expected + 1)
        except (ValueError, binascii.Error, zlib.error) as error:
            raise ResultsError(f"the sandbox's results are unreadable: {type(error).__name__}") from None
        statuses = [CODE_STATUSES.get(chr(code)) for code in codes]
        if report.samples != expected or len(statuses) != expected or None in statuses:
            raise ResultsError(f"the sandbox returned {len(statuses)} statuses for {expected} samples")
        return statuses  # type: ignore[return-value]
