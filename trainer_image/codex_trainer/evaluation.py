"""Evaluation: loss and perplexity on the validation split, then completions for HumanEval-format tasks
run in the sandbox and scored into pass@k and the gates."""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

import torch
from codex_api.gates import SampleOutcome

from .data import Task
from .gates import SampleScore, parses, severe_findings
from .logs import event
from .sandbox import Limits, run_untrusted

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


def program_for(task: Task, completion: str) -> str:
    return f"{generation_prompt(task.prompt)}{completion}\n\n{task.test}\n\ncheck({task.entry_point})\n"


def run_outcome(task: Task, completion: str, severe: Sequence[str], limits: Limits) -> SampleOutcome:
    """What one completion does: whether it parses, and if so how its sandboxed test run ended."""
    program = program_for(task, completion)
    if not parses(program):
        return SampleOutcome(task_id=task.task_id, parses=False, passed=False, in_time=False, bandit=tuple(severe),
                             status="syntax-error", elapsed=0.0)
    result = run_untrusted(program, limits)
    return SampleOutcome(task_id=task.task_id, parses=True, passed=result.passed, in_time=result.in_time,
                         bandit=tuple(severe), status=result.status, elapsed=round(result.elapsed, 3))


def score_samples(tasks: Sequence[Task], completions: Sequence[Sequence[str]], timeout_seconds: float) -> list[SampleScore]:
    """Bandit, syntax and a sandboxed test run for every completion, scored by every per-sample gate.
    Never raises for what the code does."""
    flat = [(task, completion) for task, group in zip(tasks, completions) for completion in group]
    findings = severe_findings([generation_prompt(task.prompt) + completion for task, completion in flat])
    limits = Limits(timeout_seconds=timeout_seconds)
    scores = [SampleScore.of(run_outcome(task, completion, severe, limits))
              for (task, completion), severe in zip(flat, findings)]
    event("evaluate", "samples.scored", samples=len(scores), passed=sum(s.outcome.passed for s in scores))
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
