"""Helpers for the stage tests: HumanEval-format tasks of our own, completions in both forms, and a hand-off
written as the train stage writes it, with an adapter folder beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from codex_api.run_status import Lineage, Metrics
from codex_trainer.baseline import baseline_inputs
from codex_trainer.data import Task
from codex_trainer.handoff import AdapterRef, BaselineRef, Handoff, adapter_dir, handoff_file
from codex_trainer.publish import adapter_digest

from .kit import tiny_run

TASKS = [
    Task("mine/running_max",
         'def running_max(numbers: list) -> list:\n    """The largest number seen so far, at each position.\n'
         '    >>> running_max([1, 3, 2])\n    [1, 3, 3]\n    """\n',
         "def check(candidate):\n    assert candidate([1, 3, 2, 5]) == [1, 3, 3, 5]\n    assert candidate([]) == []\n"
         "    assert candidate([-2, -5]) == [-2, -2]\n",
         "running_max"),
    Task("mine/count_vowels",
         'def count_vowels(text: str) -> int:\n    """How many letters of text are vowels (a, e, i, o, u; either case)."""\n',
         'def check(candidate):\n    assert candidate("Banana") == 3\n    assert candidate("xyz") == 0\n'
         '    assert candidate("AEIOU") == 5\n',
         "count_vowels"),
]
# HumanEval's standard form: the body that follows the prompt as given.
BODIES = [
    "    result = []\n    for number in numbers:\n        result.append(number if not result else max(result[-1], number))\n"
    "    return result\n",
    '    total = 0\n    for letter in text.lower():\n        total += letter in "aeiou"\n    return total\n',
]
LOOP = "\n    while True:\n        pass\n"
SYNTAX_ERROR = "\n    return (\n"
# Passes its tests, with a bandit finding of medium severity (B307, eval).
EVAL_VOWELS = "\n    return eval('sum(letter in \"aeiou\" for letter in text.lower())', {'text': text})\n"
PRINTS = "\n    print(''.join(['LEAK', 'MARK']))\n    return [max(numbers[:i + 1]) for i in range(len(numbers))]\n"
CACHE_INPUTS = dict(base_revision="embedded/tiny-llama@seed1337-v1", tasks_sha256="c" * 64, dtype="float32",
                    image="test-image")


def trainer_form(body: str) -> str:
    """The trainer's form: generated after the prompt without its trailing newline, so it starts with one."""
    return "\n" + body


def without_last_line(completion: str) -> str:
    return "".join(completion.splitlines(keepends=True)[:-1])


def write_adapter(work_dir: Path) -> AdapterRef:
    folder = adapter_dir(work_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "base_model_name_or_path": "tiny"}))
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    (folder / "tokenizer.json").write_text("{}")
    digest, size = adapter_digest(folder)
    return AdapterRef(sha256=digest, size_bytes=size)


def write_handoff(work_dir: Path, completions: Sequence[Sequence[str]], base: Optional[Sequence[Sequence[str]]] = None,
                  *, spec=None, cache_dir: Optional[Path] = None, timeout: float = 2.0,
                  tasks: Sequence[Task] = TASKS) -> Handoff:
    """A hand-off as the train stage writes it (with an adapter), for tasks and completions of our own; the base
    cache is the run's (default: the tiny run's, beside the work dir)."""
    baseline = BaselineRef(directory=str(cache_dir or work_dir.parent / "baselines"),
                           inputs=baseline_inputs(spec or tiny_run().spec, **CACHE_INPUTS))
    handoff = Handoff(
        tasks=list(tasks), completions=[list(group) for group in completions],
        base_completions=None if base is None else [list(group) for group in base], baseline=baseline,
        timeout_seconds=timeout, metrics=Metrics(train_loss=1.25, eval_loss=0.5, perplexity=1.6487, train_tokens=900),
        lineage=Lineage(base_model_revision=CACHE_INPUTS["base_revision"], dataset_sha256="d" * 64,
                        config_hash="e" * 64, image="test-image"),
        results={"run": {"name": "tiny", "namespace": "default"}, "train": {"steps": 4},
                 "data": {"train": 10, "validation": 2}, "timings": {"train_seconds": 1.5}},
        adapter=write_adapter(work_dir))
    handoff.write(handoff_file(work_dir))
    return handoff
