"""Evaluation: loss and perplexity on the validation split, then completions for HumanEval-format tasks
run by the parallel executor (executor.py) and scored into pass@k and the gates."""

from __future__ import annotations

import math
import re
import time
from typing import Any, Optional, Sequence

import torch
from codex_api.gates import SampleOutcome

from .data import Task
from .executor import Progress, run_programs
from .gates import SampleScore, parses, severe_findings
from .logs import event
from .sandbox import Limits, SandboxResult

# Stop early on the usual HumanEval boundaries; truncate_completion makes the cut exact.
STOP_STRINGS = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\n```"]
_END_OF_BODY = re.compile(r"\n(?=\S)")
# exp() of a loss above this overflows float32 and says nothing more.
MAX_LOG_PERPLEXITY = 50.0


def perplexity(loss: float) -> float:
    return round(math.exp(min(loss, MAX_LOG_PERPLEXITY)), 4)


def generation_prompt(prompt: str) -> str:
    """The prompt without its trailing newlines. Training tokenised the prompt/completion boundary
    (a newline, then the body's indentation) as merged tokens; a prompt that ends on a bare newline
    asks for a continuation the model never saw, and small models then stop at once."""
    return prompt.rstrip("\n")


def truncate_completion(text: str) -> str:
    """The function body only: everything before the first line that starts at column 0."""
    match = _END_OF_BODY.search(text)
    return text[: match.start() + 1] if match else text


def generate_completions(model: Any, tokenizer: Any, prompts: Sequence[str], *, samples: int, max_new_tokens: int,
                         temperature: float, seed: int, batch_size: int = 8) -> list[list[str]]:
    """``samples`` completions per prompt (greedy when temperature is 0: one decode, repeated)."""
    tokenizer.padding_side = "left"
    sampling = temperature > 0
    per_prompt = samples if sampling else 1
    options: dict[str, Any] = dict(max_new_tokens=max_new_tokens, num_return_sequences=per_prompt,
                                   pad_token_id=tokenizer.pad_token_id, stop_strings=STOP_STRINGS,
                                   tokenizer=tokenizer, do_sample=sampling)
    if sampling:
        options.update(temperature=temperature, top_p=0.95)
    else:
        options.update(temperature=None, top_p=None, top_k=None)
    was_training, use_cache = model.training, getattr(model.config, "use_cache", True)
    model.eval()
    model.config.use_cache = True
    torch.manual_seed(seed)
    results: list[list[str]] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start:start + batch_size])
            encoded = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                output = model.generate(**encoded, **options)
            texts = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
            for index in range(len(chunk)):
                group = [truncate_completion(t) for t in texts[index * per_prompt:(index + 1) * per_prompt]]
                results.append(group if sampling else group * samples)
    finally:
        model.config.use_cache = use_cache
        model.train(was_training)
    return results


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


def sample_outcome(task: Task, severe: Sequence[str], result: Optional[SandboxResult]) -> SampleOutcome:
    """What one completion did: no result means its program does not parse, so it never ran."""
    if result is None:
        return SampleOutcome(task_id=task.task_id, parses=False, passed=False, in_time=False, bandit=tuple(severe),
                             status="syntax-error", elapsed=0.0)
    return SampleOutcome(task_id=task.task_id, parses=True, passed=result.passed, in_time=result.in_time,
                         bandit=tuple(severe), status=result.status, elapsed=round(result.elapsed, 3))


def score_samples(tasks: Sequence[Task], completions: Sequence[Sequence[str]], timeout_seconds: float, *,
                  workers: Optional[int] = None, progress: Optional[Progress] = None) -> list[SampleScore]:
    """Bandit (once, over the batch), syntax and a sandboxed test run for every completion, scored by every
    per-sample gate. The programs run in parallel on ``workers`` processes (default: the CPUs available);
    ``progress(done, total)`` follows the samples, those that do not parse counting as done at once.
    Never raises for what the code does."""
    started = time.monotonic()
    flat = [(task, completion) for task, group in zip(tasks, completions) for completion in group]
    findings = severe_findings([join_completion(task.prompt, completion) for task, completion in flat])
    programs = [program_for(task, completion) for task, completion in flat]
    runnable = [index for index, program in enumerate(programs) if parses(program)]
    unparsed = len(flat) - len(runnable)
    if progress is not None:
        progress(unparsed, len(flat))
    results = run_programs([programs[i] for i in runnable], Limits(timeout_seconds=timeout_seconds),
                           workers=workers,
                           progress=None if progress is None else lambda done, _: progress(unparsed + done, len(flat)))
    by_index = dict(zip(runnable, results))
    scores = [SampleScore.of(sample_outcome(task, severe, by_index.get(index)))
              for index, ((task, _), severe) in enumerate(zip(flat, findings))]
    event("evaluate", "samples.scored", samples=len(scores), passed=sum(s.outcome.passed for s in scores),
          seconds=round(time.monotonic() - started, 2))
    return scores


def correct_per_task(tasks: Sequence[Task], scores: Sequence[SampleScore]) -> list[tuple[int, int]]:
    counts = {task.task_id: [0, 0] for task in tasks}
    for score in scores:
        counts[score.outcome.task_id][0] += 1
        counts[score.outcome.task_id][1] += int(score.outcome.passed)
    return [(n, c) for n, c in counts.values()]


def completion_loss(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], max_length: int,
                    batch_size: int = 8) -> float:
    """Mean token NLL of each completion given its prompt (for DPO, on the chosen answers)."""
    tokenizer.padding_side = "right"
    total, tokens = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(pairs), batch_size):
            rows, masks = [], []
            for prompt, completion in pairs[start:start + batch_size]:
                prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
                completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                ids = (prompt_ids + completion_ids)[:max_length]
                rows.append(ids)
                masks.append(([0] * len(prompt_ids) + [1] * len(completion_ids))[:max_length])
            width = max(len(r) for r in rows)
            input_ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
            attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
            labels = torch.tensor([[t if m else -100 for t, m in zip(r, k)] + [-100] * (width - len(r))
                                   for r, k in zip(rows, masks)])
            with torch.no_grad():
                logits = model(input_ids=input_ids.to(model.device), attention_mask=attention.to(model.device)).logits
            shifted = labels[:, 1:].to(logits.device)
            losses = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), shifted,
                                                       ignore_index=-100, reduction="sum")
            total += losses.item()
            tokens += int((shifted != -100).sum())
    finally:
        model.train(was_training)
    return total / max(tokens, 1)


def samples_table(scores: Sequence[SampleScore], completions: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
    """Per-sample rows for results.json."""
    flat = [completion for group in completions for completion in group]
    return [{**score.row(), "completion": completion} for score, completion in zip(scores, flat)]
