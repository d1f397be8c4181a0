"""gates.py and the scoring half of evaluation.py: pass@k, syntax, bandit, verdicts, completion truncation."""

from __future__ import annotations

import pytest

from api.gate_kit import outcome
from codex_api.training_run import Thresholds
from codex_trainer import evaluation
from codex_trainer.data import Task
from codex_trainer.evaluation import score_samples, truncate_completion
from codex_trainer.programs import generation_prompt, program_for
from codex_trainer.gates import SampleScore, mean_pass_at_k, pass_at_k, severe_findings, verdict


@pytest.mark.parametrize("n,c,k,expected", [
    (5, 0, 1, 0.0),
    (5, 5, 1, 1.0),
    (5, 1, 1, 0.2),            # 1 - C(4,1)/C(5,1) = 1 - 4/5
    (5, 2, 2, 0.7),            # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (10, 3, 5, 231 / 252),     # 1 - C(7,5)/C(10,5) = 1 - 21/252
    (2, 1, 2, 1.0),            # fewer failures than k: every k-subset holds a success
    (20, 4, 10, 1 - 8008 / 184756),
], ids=["none", "all", "one-of-five", "two-of-five-k2", "ten-k5", "n-c-below-k", "twenty-k10"])
def test_pass_at_k_matches_hand_computed_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError, match="needs 0 <= c <= n and 1 <= k <= n"):
        pass_at_k(3, 4, 1)


def test_mean_pass_at_k_over_tasks():
    # task A: 1 of 2 correct; task B: 0 of 2 -> pass@1 = (0.5 + 0) / 2; pass@2 = (1 + 0) / 2
    assert mean_pass_at_k([(2, 1), (2, 0)], [1, 2]) == {"pass@1": 0.25, "pass@2": 0.5}


def test_bandit_flags_medium_and_high_only():
    sources = ["def f(x):\n    return eval(x)\n",                      # B307 medium
               "import subprocess\ndef f(c):\n    return subprocess.call(c, shell=True)\n",  # B602 high, B404 low
               "import subprocess\n",                                    # B404 low only
               "def f(a, b):\n    return a + b\n",
               "def broken(:\n"]
    assert severe_findings(sources) == [["B307"], ["B602"], [], [], []]


def score(**facts) -> SampleScore:
    return SampleScore.of(outcome(**facts))


def test_verdict_compares_every_gate_with_its_threshold():
    scores = [score(), score(passed=False), score(passed=False, in_time=False), score(bandit=("B307",))]
    gates = verdict(scores, Thresholds(syntax_ok=1.0, logic_ok=0.5, security_ok=0.9, perf_ok=0.75), {})
    assert gates.to_wire() == {
        "passed": False,
        "syntaxOk": {"value": 1.0, "threshold": 1.0, "passed": True},
        "logicOk": {"value": 0.5, "threshold": 0.5, "passed": True},
        "securityOk": {"value": 0.75, "threshold": 0.9, "passed": False},
        "perfOk": {"value": 0.75, "threshold": 0.75, "passed": True},
    }


def test_perplexity_gate_and_no_tasks():
    assert verdict([], Thresholds(), {"perplexity": None}).to_wire() == {"passed": True}
    gates = verdict([], Thresholds(max_perplexity=20), {"perplexity": 25.5})
    assert gates.to_wire() == {"passed": False, "perplexity": {"value": 25.5, "threshold": 20.0, "passed": False}}
    assert verdict([], Thresholds(max_perplexity=20), {"perplexity": 3.0}).passed
    unmeasured = verdict([], Thresholds(max_perplexity=20), {"perplexity": None})  # no validation records
    assert unmeasured.to_wire()["perplexity"] == {"value": 1e30, "threshold": 20.0, "passed": False}


def test_results_row_has_one_column_per_gate():
    assert score(parses=False, passed=False, in_time=False, status="syntax-error", elapsed=0.0).row() == {
        "task_id": "t", "syntax_ok": False, "logic_ok": None, "security_ok": None, "perf_ok": None,
        "status": "syntax-error", "elapsed": 0.0, "bandit": [],
    }


def test_a_syntax_error_counts_against_syntax_ok_only():
    broken = dict(parses=False, passed=False, in_time=False, status="syntax-error", elapsed=0.0)
    scores = [score(), score(in_time=False, passed=False, status="timeout"), score(**broken), score(**broken)]
    gates = verdict(scores, Thresholds(syntax_ok=0.5, logic_ok=0.5, security_ok=1.0, perf_ok=0.5), {}).to_wire()
    assert {name: gate["value"] for name, gate in gates.items() if isinstance(gate, dict)} == {
        "syntaxOk": 0.5, "logicOk": 0.5, "securityOk": 1.0, "perfOk": 0.5}
    assert gates["passed"] is True


@pytest.mark.parametrize("generated,body", [
    ("\n    return a + b\n\ndef other():\n    pass\n", "\n    return a + b\n\n"),
    ("\n    x = 1\n\n    return x\nprint(f(1))", "\n    x = 1\n\n    return x\n"),
    ("\n    return 1", "\n    return 1"),
    ("\nThis function adds numbers.", "\n"),
], ids=["next-def", "blank-line-inside", "no-end", "prose"])
def test_truncate_completion_keeps_the_body(generated, body):
    assert truncate_completion(generated) == body


def test_scoring_runs_each_completion_in_the_sandbox(monkeypatch):
    task = Task("t/add", 'def add(a, b):\n    """Add."""\n', "def check(f):\n    assert f(2, 3) == 5\n", "add")
    assert generation_prompt(task.prompt) == 'def add(a, b):\n    """Add."""'
    completions = [["\n    return a + b\n", "\n    return a - b\n", "\n    return eval('a+b')\n", "\n    retur a\n",
                    "\n    while True:\n        pass\n"]]
    scanned, progress = [], []
    monkeypatch.setattr(evaluation, "severe_findings", lambda sources: scanned.append(len(sources))
                        or severe_findings(sources))
    scores = score_samples([task], completions, timeout_seconds=1.0, workers=2,
                           progress=lambda done, total: progress.append((done, total)))
    assert scanned == [5]  # bandit once over the batch
    assert progress == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]  # the syntax error is done at once
    assert [(s.outcome.parses, s.outcome.passed, s.outcome.bandit, s.outcome.in_time, s.outcome.status)
            for s in scores] == [
        (True, True, (), True, "passed"),
        (True, False, (), True, "failed"),
        (True, True, ("B307",), True, "passed"),
        (False, False, (), False, "syntax-error"),
        (True, False, (), False, "timeout"),
    ]
    assert [tuple(s.gates.values()) for s in scores] == [
        (True, True, True, True), (True, False, True, True), (True, True, False, True), (False, None, None, None),
        (True, False, True, False),
    ]
    assert program_for(task, "\n    return a + b\n").endswith("check(add)\n")
