"""Scoring generated code: unbiased pass@k, the four quality gates, and the verdict against thresholds.

- ``syntax_ok``: the share of completions whose program (prompt + completion) parses;
- ``logic_ok``: the share that pass their task's tests in the sandbox;
- ``security_ok``: the share with no bandit finding of medium severity or above;
- ``perf_ok``: the share whose test run finished (pass or fail) within ``timeoutSeconds``,
  i.e. was not stopped by the wall-clock or CPU limit.
"""

from __future__ import annotations

import ast
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from codex_api.training_run import Gate, Gates, Thresholds

SEVERE = ("MEDIUM", "HIGH")
# Perplexity when it could not be measured: finite, so the status stays valid JSON, and fails any maximum.
UNMEASURED = 1e30


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


def parses(source: str) -> bool:
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    return True


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
    task_id: str
    syntax_ok: bool
    logic_ok: bool
    security_ok: bool
    perf_ok: bool
    status: str
    elapsed: float
    bandit: tuple[str, ...] = ()


def share(scores: Sequence[SampleScore], attribute: str) -> float:
    return round(sum(getattr(s, attribute) for s in scores) / len(scores), 6) if scores else 0.0


def verdict(scores: Sequence[SampleScore], thresholds: Thresholds, perplexity: Optional[float]) -> Gates:
    """The gates measured and whether each meets its threshold; with no tasks only perplexity is gated."""
    gates: dict[str, Gate] = {}
    if scores:
        for name in ("syntax_ok", "logic_ok", "security_ok", "perf_ok"):
            value, threshold = share(scores, name), getattr(thresholds, name)
            gates[name] = Gate(value=value, threshold=threshold, passed=value >= threshold)
    if thresholds.max_perplexity is not None:
        value = perplexity if perplexity is not None else UNMEASURED  # no validation records
        gates["perplexity"] = Gate(value=round(value, 4), threshold=thresholds.max_perplexity,
                                   passed=value <= thresholds.max_perplexity)
    return Gates(passed=all(gate.passed for gate in gates.values()), **gates)
