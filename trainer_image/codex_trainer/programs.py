"""The program a completion is tested as: the task's prompt, the completion and the task's test.

Standard library only: the sandbox stage (:mod:`codex_trainer.stages`) builds the programs it runs
with these functions and must start without the ML stack; the single-process path and the publish
stage build the same programs with the same functions, so all three judge the same source.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Optional, Sequence

from .data import Task
from .executor import Progress, run_programs
from .sandbox import Limits, SandboxResult

Sample = tuple[Task, str]


def generation_prompt(prompt: str) -> str:
    """The prompt without its trailing newlines. Training tokenised the prompt/completion boundary
    (a newline, then the body's indentation) as merged tokens; a prompt that ends on a bare newline
    asks for a continuation the model never saw, and small models then stop at once."""
    return prompt.rstrip("\n")


def join_completion(prompt: str, completion: str) -> str:
    """The function's source, from a completion in either form a completion comes in.

    - The trainer's own form was generated after :func:`generation_prompt`, so it begins with the
      newline that ends the prompt's last line; it joins the stripped prompt, exactly as generated.
    - HumanEval's standard form (``canonical_solution``, other harnesses' samples) is the body that
      follows the prompt as given, trailing newline included; it joins as ``prompt + completion``,
      which is what those harnesses run, so it scores the same here as there.
    """
    if completion.startswith("\n"):
        return generation_prompt(prompt) + completion
    return prompt + completion


def program_for(task: Task, completion: str) -> str:
    return f"{join_completion(task.prompt, completion)}\n\n{task.test}\n\ncheck({task.entry_point})\n"


def parses(source: str) -> bool:
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    return True


def flatten(tasks: Sequence[Task], completions: Sequence[Sequence[str]]) -> list[Sample]:
    """Every sample, task by task in order, each task's completions in order: the order of every result."""
    return [(task, completion) for task, group in zip(tasks, completions) for completion in group]


@dataclass(frozen=True)
class Batch:
    """A batch's programs in sample order, and the indices of those that parse: only those run."""

    programs: list[str]
    runnable: list[int]

    @classmethod
    def of(cls, samples: Sequence[Sample]) -> "Batch":
        programs = [program_for(task, completion) for task, completion in samples]
        return cls(programs, [index for index, program in enumerate(programs) if parses(program)])


def run_batch(batch: Batch, timeout_seconds: float, *, workers: Optional[int] = None,
              progress: Optional[Progress] = None) -> dict[int, SandboxResult]:
    """Each runnable program's result on the parallel executor, by sample index. ``progress(done, total)``
    follows the whole batch, the programs that do not parse counting as done at once."""
    total, unparsed = len(batch.programs), len(batch.programs) - len(batch.runnable)
    if progress is not None:
        progress(unparsed, total)
    results = run_programs([batch.programs[index] for index in batch.runnable], Limits(timeout_seconds=timeout_seconds),
                           workers=workers,
                           progress=None if progress is None else lambda done, _: progress(unparsed + done, total))
    return dict(zip(batch.runnable, results))
