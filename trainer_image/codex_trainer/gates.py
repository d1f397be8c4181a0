"""Scoring generated code: unbiased pass@k, bandit, and the verdict of every registered gate.

The gates themselves (what each scores, its threshold and its bound) are declared once in
:mod:`codex_api.gates`; here each completion's outcome is scored by every per-sample gate and
the verdict iterates the registry, so a new gate needs no edit in this file.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from codex_api.evaluation import Gate, Gates, Thresholds
from codex_api.gates import GATES, SampleOutcome, sample_gates

SEVERE = ("MEDIUM", "HIGH")


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator of Chen et al. (2021): 1 - C(n-c, k) / C(n, k), in its stable product form."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(correct_per_task: Sequence[tuple[int, int]], ks: Sequence[int]) -> dict[str, float]:
    """``{"pass@k": mean over tasks}`` from ``(n, c)`` per task."""
    return {f"pass@{k}": round(float(np.mean([pass_at_k(n, c, k) for n, c in correct_per_task])), 6) for k in ks}


def severe_findings(sources: Sequence[str]) -> list[list[str]]:
    """For each source, the bandit test ids of medium+ severity findings (bandit as a library)."""
    from bandit.core import config as bandit_config
    from bandit.core import manager

    logging.getLogger("bandit").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="codex-bandit-") as tmp:
        paths = []
        for index, source in enumerate(sources):
            path = Path(tmp) / f"sample_{index:05d}.py"
            path.write_text(source, encoding="utf-8")
            paths.append(str(path))
        scanner = manager.BanditManager(bandit_config.BanditConfig(), "file", quiet=True)
        scanner.discover_files(paths)
        scanner.run_tests()
        findings: dict[str, list[str]] = {path: [] for path in paths}
        for issue in scanner.get_issue_list():
            if issue.severity in SEVERE:
                findings.setdefault(issue.fname, []).append(issue.test_id)
    return [findings[path] for path in paths]


@dataclass(frozen=True)
class SampleScore:
    """One completion: what running it showed, and pass (True), fail (False) or not counted (None) per gate."""

    outcome: SampleOutcome
    gates: Mapping[str, Optional[bool]]

    @classmethod
    def of(cls, outcome: SampleOutcome) -> "SampleScore":
        return cls(outcome, {gate.name: gate.scored(outcome) for gate in sample_gates()})

    def row(self) -> dict[str, Any]:
        """The results.json row: the outcome's task, status, time and findings, and one column per gate."""
        outcome = self.outcome
        marks = {gate.attr: self.gates[gate.name] for gate in sample_gates()}
        return {"task_id": outcome.task_id, **marks, "status": outcome.status, "elapsed": outcome.elapsed,
                "bandit": list(outcome.bandit)}


def verdict(scores: Sequence[SampleScore], thresholds: Thresholds,
            measurements: Mapping[str, Optional[float]]) -> Gates:
    """Every registered gate that has something to gate and a threshold, and whether it meets it.

    With no tasks only the metric gates (perplexity) are measured; an unset optional threshold skips its gate.
    """
    outcomes = [score.outcome for score in scores]
    gates: dict[str, Gate] = {}
    for gate in GATES:
        threshold = getattr(thresholds, gate.threshold.attr)
        value = gate.measure(outcomes, measurements)
        if threshold is not None and value is not None:
            gates[gate.attr] = Gate(value=value, threshold=threshold, passed=gate.judge(value, threshold))
    return Gates(passed=all(gate.passed for gate in gates.values()), **gates)
