"""Evaluation: loss and perplexity on the validation split, then completions for HumanEval-format tasks
run by the parallel executor (executor.py) and scored into pass@k and the gates.

Scoring comes in three parts, so that the single-process run and the staged run (stages.py: the
programs run in a sandbox pod, the scores are made in the publish pod) score alike: the static
checks (:class:`~codex_trainer.programs.Batch` for syntax, :func:`findings_of` for bandit), the run
(:func:`~codex_trainer.programs.run_batch`) and :func:`combine`. torch is imported only where a model
is used, so the scoring half loads without it.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any, Mapping, Optional, Sequence

from codex_api.gates import SampleOutcome

from .data import Task
from .executor import Progress
from .gates import SampleScore, severe_findings
from .logs import event
from .programs import Batch, Sample, flatten, join_completion, run_batch
from .sandbox import SandboxResult

# Stop early on the usual HumanEval boundaries; truncate_completion makes the cut exact.
STOP_STRINGS = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\n```"]
_END_OF_BODY = re.compile(r"\n(?=\S)")
# exp() of a loss above this overflows float32 and says nothing more.
MAX_LOG_PERPLEXITY = 50.0


def perplexity(loss: float) -> float:
    return round(math.exp(min(loss, MAX_LOG_PERPLEXITY)), 4)


def truncate_completion(text: str) -> str:
    """The function body only: everything before the first line that starts at column 0."""
    match = _END_OF_BODY.search(text)
    return text[: match.start() + 1] if match else text


def generate_completions(model: Any, tokenizer: Any, prompts: Sequence[str], *, samples: int, max_new_tokens: int,
                         temperature: float, seed: int, batch_size: int = 8,
                         synced_gpus: bool = False) -> list[list[str]]:
    """``samples`` completions per prompt (greedy when temperature is 0: one decode, repeated).

    ``synced_gpus``: the weights are sharded, and every rank runs this same call in lockstep."""
    import torch

    tokenizer.padding_side = "left"
    sampling = temperature > 0
    per_prompt = samples if sampling else 1
    options: dict[str, Any] = dict(max_new_tokens=max_new_tokens, num_return_sequences=per_prompt,
                                   pad_token_id=tokenizer.pad_token_id, stop_strings=STOP_STRINGS,
                                   tokenizer=tokenizer, do_sample=sampling, synced_gpus=synced_gpus)
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


def sample_outcome(task: Task, severe: Sequence[str], result: Optional[SandboxResult]) -> SampleOutcome:
    """What one completion did: no result means its program does not parse, so it never ran."""
    if result is None:
        return SampleOutcome(task_id=task.task_id, parses=False, passed=False, in_time=False, bandit=tuple(severe),
                             status="syntax-error", elapsed=0.0)
    return SampleOutcome(task_id=task.task_id, parses=True, passed=result.passed, in_time=result.in_time,
                         bandit=tuple(severe), status=result.status, elapsed=round(result.elapsed, 3))


def findings_of(samples: Sequence[Sample]) -> list[list[str]]:
    """Each sample's bandit findings, from one bandit pass over the batch (the function's source, not the test)."""
    return severe_findings([join_completion(task.prompt, completion) for task, completion in samples])


def combine(samples: Sequence[Sample], batch: Batch, findings: Sequence[Sequence[str]],
            results: Mapping[int, SandboxResult]) -> list[SampleScore]:
    """Every sample scored by every per-sample gate, from the static checks and the runnable programs'
    results (by sample index); a program that does not parse scores as a syntax error, whatever was run."""
    runnable = set(batch.runnable)
    return [SampleScore.of(sample_outcome(task, severe, results.get(index) if index in runnable else None))
            for index, ((task, _), severe) in enumerate(zip(samples, findings))]


def score_samples(tasks: Sequence[Task], completions: Sequence[Sequence[str]], timeout_seconds: float, *,
                  workers: Optional[int] = None, progress: Optional[Progress] = None) -> list[SampleScore]:
    """Bandit (once, over the batch), syntax and a sandboxed test run for every completion, scored by every
    per-sample gate. The programs run in parallel on ``workers`` processes (default: the CPUs available);
    ``progress(done, total)`` follows the samples, those that do not parse counting as done at once.
    Never raises for what the code does."""
    started = time.monotonic()
    samples = flatten(tasks, completions)
    batch = Batch.of(samples)
    scores = combine(samples, batch, findings_of(samples),
                     run_batch(batch, timeout_seconds, workers=workers, progress=progress))
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
    import torch

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
