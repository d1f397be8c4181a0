"""The quality-gate registry: every gate is declared once, here, and everything else iterates :data:`GATES`.

A gate is one entry. It names the gate as ``status.gates`` spells it, declares its threshold
field in ``spec.evaluation.thresholds`` (wire name, default, bounds, description), says how it
is measured and how it reads in the run's GatesPassed message. From this list come the
``Thresholds`` and ``Gates`` models (and so the CRD), the trainer's verdict, the operator's
status message and the API reference.

There are two kinds of gate:

- a :class:`SampleGate` scores each completion's :class:`SampleOutcome` pass or fail. Its value
  is the share that pass among the completions it counts (``counts``: all of them unless it
  says otherwise), and it passes when that share is at least the threshold;
- a :class:`MetricGate` reads one named measurement (perplexity, say) and compares it with its
  threshold, a ``"max"`` or a ``"min"``. A threshold whose default is None is optional: unset
  skips the gate.

To add a gate, append one ``register(...)`` entry at the end of this file.

This module imports nothing from ``codex_api``, so the entries exist before any model is built
from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Optional, Sequence

from pydantic.alias_generators import to_snake

# The measurement recorded when a metric could not be measured: finite, so the status stays valid
# JSON, and on the failing side of any threshold.
UNMEASURED = {"max": 1e30, "min": -1e30}


@dataclass(frozen=True)
class SampleOutcome:
    """What running one generated completion showed; every per-sample gate scores this record."""

    task_id: str
    parses: bool  # the program (prompt + completion + tests) is valid Python
    passed: bool  # its tests passed in the sandbox
    in_time: bool  # its test run ended on its own (pass or fail), not stopped by the time or CPU limit
    bandit: tuple[str, ...]  # bandit test ids of medium+ severity findings
    status: str  # the sandbox's word for how the run ended ("passed", "failed", "timeout", "syntax-error", ...)
    elapsed: float  # seconds the test run took


@dataclass(frozen=True)
class Threshold:
    """A field of spec.evaluation.thresholds.

    ``description`` starts with the wire name; "Defaults to X." is appended from ``default`` so the
    two cannot disagree. A threshold whose default is None is optional and its description says what
    unset means. ``bounds`` are pydantic Field constraints (ge, gt, le, lt), which become CRD bounds.
    """

    wire: str
    default: Optional[float]
    description: str
    bounds: Mapping[str, float] = field(default_factory=lambda: {"ge": 0, "le": 1})

    @property
    def attr(self) -> str:
        return to_snake(self.wire)

    def field_description(self) -> str:
        if self.default is None:
            return self.description
        return f"{self.description} Defaults to {self.default:g}."


@dataclass(frozen=True, kw_only=True)
class GateEntry:
    """What every gate declares; :class:`SampleGate` and :class:`MetricGate` say how it is measured."""

    name: str  # status.gates.<name>
    threshold: Threshold
    description: str  # of status.gates.<name>; starts with the name
    bound: Literal["min", "max"] = "min"  # the value must be at least ("min") or at most ("max") the threshold
    reads: str = "{name} {value:.3g}/{threshold:.3g}"  # how it reads in the status message
    digits: int = 6  # the value is rounded to this many decimals

    @property
    def attr(self) -> str:
        return to_snake(self.name)

    def measure(self, outcomes: Sequence[SampleOutcome], measurements: Mapping[str, Optional[float]]) -> Optional[float]:
        """The gate's value, or None when there is nothing to gate (the gate is then left out)."""
        raise NotImplementedError

    def judge(self, value: float, threshold: float) -> bool:
        return value >= threshold if self.bound == "min" else value <= threshold

    def reading(self, gate: Mapping[str, Any]) -> str:
        """This gate's part of the GatesPassed message, from its status.gates entry."""
        mark = "ok" if gate.get("passed") else "FAILED"
        return f"{self.reads.format(name=self.name, value=gate.get('value'), threshold=gate.get('threshold'))} {mark}"


def _every(outcome: SampleOutcome) -> bool:
    return True


@dataclass(frozen=True, kw_only=True)
class SampleGate(GateEntry):
    """A gate on the share of completions whose outcome passes ``score``, among those ``counts`` keeps."""

    score: Callable[[SampleOutcome], bool]
    counts: Callable[[SampleOutcome], bool] = _every

    def scored(self, outcome: SampleOutcome) -> Optional[bool]:
        """Pass or fail for one completion; None when this gate does not count it."""
        return self.score(outcome) if self.counts(outcome) else None

    def measure(self, outcomes: Sequence[SampleOutcome], measurements: Mapping[str, Optional[float]]) -> Optional[float]:
        if not outcomes:
            return None  # no tasks: the code gates are skipped
        marks = [mark for mark in map(self.scored, outcomes) if mark is not None]
        return round(sum(marks) / len(marks), self.digits) if marks else 0.0


@dataclass(frozen=True, kw_only=True)
class MetricGate(GateEntry):
    """A gate on one named measurement; an unmeasured one is recorded as :data:`UNMEASURED` and fails,
    unless ``skip_unmeasured``: a metric that only exists when there is something to compare (the base
    model's pass@k, which needs tasks) then leaves its gate out, as a SampleGate with no tasks does."""

    metric: str
    digits: int = 4
    skip_unmeasured: bool = False

    def measure(self, outcomes: Sequence[SampleOutcome], measurements: Mapping[str, Optional[float]]) -> Optional[float]:
        value = measurements.get(self.metric)
        if value is None and self.skip_unmeasured:
            return None
        return round(value if value is not None else UNMEASURED[self.bound], self.digits)


GATES: list[GateEntry] = []


def register(gate: GateEntry) -> GateEntry:
    """Add a gate; its place in :data:`GATES` is its place in the CRD, the status and the reference."""
    if gate.name == "passed" or any(gate.name == g.name or gate.threshold.wire == g.threshold.wire for g in GATES):
        raise ValueError(f"gate {gate.name!r} or threshold {gate.threshold.wire!r} is taken")
    for wire, text in ((gate.name, gate.description), (gate.threshold.wire, gate.threshold.description)):
        if not text.startswith(wire):
            raise ValueError(f"the description of {wire!r} must start with its name")
    if gate.threshold.default is None and "Unset" not in gate.threshold.description:
        raise ValueError(f"optional threshold {gate.threshold.wire!r} must say what unset means")
    GATES.append(gate)
    return gate


def sample_gates() -> list[SampleGate]:
    return [gate for gate in GATES if isinstance(gate, SampleGate)]


def describe(gates: Mapping[str, Any]) -> str:
    """The GatesPassed message from status.gates (wire form): each measured gate, value/threshold and mark."""
    parts = [gate.reading(gates[gate.name]) for gate in GATES if gates.get(gate.name)]
    return "; ".join(parts) or ("all gates passed" if gates.get("passed") else "gates not met")


register(SampleGate(
    name="syntaxOk", description="syntaxOk: share of all completions whose program (prompt, completion and "
    "tests) parses. A syntax error counts here and in no other gate.",
    threshold=Threshold("syntaxOk", 0.8, "syntaxOk: the least share of all completions that parse; the only "
                        "gate a syntax error counts against."),
    score=lambda outcome: outcome.parses,
))
register(SampleGate(
    name="logicOk", description="logicOk: share of the completions that parse whose tests pass (one that does "
    "not parse counts against syntaxOk only).",
    threshold=Threshold("logicOk", 0.8, "logicOk: the least share of the completions that parse whose tests "
                        "pass; syntax errors count against syntaxOk only."),
    score=lambda outcome: outcome.passed, counts=lambda outcome: outcome.parses,
))
register(SampleGate(
    name="securityOk", description="securityOk: share of the completions that parse with no bandit finding of "
    "medium severity or above (one that does not parse counts against syntaxOk only).",
    threshold=Threshold("securityOk", 0.9, "securityOk: the least share of the completions that parse with no "
                        "bandit finding of medium severity or above; syntax errors count against syntaxOk only."),
    score=lambda outcome: not outcome.bandit, counts=lambda outcome: outcome.parses,
))
register(SampleGate(
    name="perfOk", description="perfOk: share of the completions that parse whose test run ended on its own "
    "(passed or failed) within evaluation.timeoutSeconds, not stopped by the time or CPU limit (one that does "
    "not parse counts against syntaxOk only).",
    threshold=Threshold("perfOk", 0.6, "perfOk: the least share of the completions that parse that run to "
                        "completion within evaluation.timeoutSeconds; syntax errors count against syntaxOk only."),
    score=lambda outcome: outcome.in_time, counts=lambda outcome: outcome.parses,
))
register(MetricGate(
    name="perplexity", metric="perplexity", bound="max",
    description="perplexity: value is the perplexity, threshold the maximum; passed when below.",
    threshold=Threshold("maxPerplexity", None, "maxPerplexity fails the run when validation perplexity is above "
                        "it. Unset skips the check.", bounds={"gt": 1}),
))
register(MetricGate(
    name="minImprovement", metric="passAtKImprovement", bound="min", digits=6, skip_unmeasured=True,
    reads="{name} {value:+.3g}/{threshold:.3g}",
    description="minImprovement: value is the adapter's pass@k minus the base model's (metrics.passAtKDelta) for "
    "the first k of evaluation.k; passed when at least the threshold. Left out when no base was scored.",
    threshold=Threshold("minImprovement", None, "minImprovement refuses promotion unless the adapter's pass@k, for "
                        "the first k of evaluation.k, beats the base model's by at least this much: 0 means no "
                        "regression, a negative value tolerates that much. Unset skips the check, as does a run "
                        "without evaluation.tasks.", bounds={"ge": -1, "le": 1}),
))
