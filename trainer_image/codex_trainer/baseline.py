"""The base model's scores beside the tuned adapter's: an adapter is worth serving only if it beats what it
was tuned from.

The base is scored exactly as the adapter is (same tasks, samples, seeds, sampling settings and budget)
by generating with the adapter disabled on the model already loaded. Those scores depend on the base
model and the evaluation settings, not on the training, so they are kept in one JSON file per
:func:`baseline_inputs` key: a later run with the same base and tasks reads them instead of paying for
generation and sandboxing again. A file that is corrupt or was written for other settings is ignored and
rewritten. The file holds each sample's outcome, not a verdict, so a changed threshold or a new gate
still judges from it.

The comparison is :class:`Comparison`: pass@k of both and their difference for ``status.metrics``, the
base value and delta of every per-sample gate for ``status.gates``, and the ``passAtKImprovement``
measurement the ``minImprovement`` gate (:mod:`codex_api.gates`) reads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping, Optional, Sequence

from codex_api import paths
from codex_api.evaluation import Gates
from codex_api.gates import SampleOutcome, sample_gates

from .config import TrainerEnv
from .data import Task
from .evaluation import correct_per_task
from .gates import SampleScore, mean_pass_at_k, verdict
from .logs import event

CACHE_DIR_NAME = ".codex-baselines"
# Part of every key: bump it when what a cache file holds, or how a sample is scored, changes.
CACHE_VERSION = 1
# The measurement the minImprovement gate reads (its entry in codex_api.gates names it).
IMPROVEMENT = "passAtKImprovement"
DIGITS = 6


def baseline_inputs(spec: Any, *, base_revision: str, tasks_sha256: str, dtype: str, image: Optional[str],
                    model_dir: Optional[Path] = None) -> dict[str, Any]:
    """Everything that changes the base model's samples or their scores; the cache key is its hash.

    The trainer image is included because it carries the generation and sandbox code. A PVC model's
    "revision" is only its path, so the files' names, sizes and times stand in for a revision there.
    """
    evaluation = spec.evaluation
    inputs = {"version": CACHE_VERSION, "baseModelRevision": base_revision, "tasksSha256": tasks_sha256,
              "samplesPerTask": evaluation.samples_per_task, "k": list(evaluation.k),
              "maxNewTokens": evaluation.max_new_tokens, "temperature": evaluation.temperature,
              "timeoutSeconds": evaluation.timeout_seconds, "seed": spec.training.seed, "dtype": dtype,
              "quantization": spec.lora.quantization, "image": image}
    if spec.base_model.pvc is not None and model_dir is not None:
        inputs["modelFiles"] = files_fingerprint(model_dir)
    return inputs


def files_fingerprint(directory: Path) -> str:
    entries = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir() if p.is_file())
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def cache_dir(spec: Any, env: TrainerEnv) -> Path:
    """The output PVC's root when the run has one, so that every run publishing there shares it; else the
    checkpoint directory. Not the PVC root when the adapter is written there: the folder would be pushed."""
    pvc = spec.output.pvc
    if pvc is not None and pvc.path.strip("/"):
        return Path(paths.pvc_dir(pvc.claim_name, PurePosixPath(env.data_root))) / CACHE_DIR_NAME
    return env.checkpoint_dir / CACHE_DIR_NAME


@dataclass(frozen=True)
class BaselineCache:
    """One cache file: the base model's sample outcomes for one set of :func:`baseline_inputs`."""

    directory: Path
    inputs: Mapping[str, Any]

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.inputs, sort_keys=True).encode()).hexdigest()[:32]

    @property
    def path(self) -> Path:
        return self.directory / f"{self.key}.json"

    def read(self, task_ids: Sequence[str]) -> Optional[list[SampleOutcome]]:
        """The cached outcomes, one per expected sample in order; None when absent, corrupt or for other
        settings (the reason is logged)."""
        try:
            entry = json.loads(self.path.read_text(encoding="utf-8"))
            if entry.get("key") != self.key or entry.get("inputs") != dict(self.inputs):
                raise ValueError("written for other settings")
            outcomes = [SampleOutcome(**{**row, "bandit": tuple(row["bandit"])}) for row in entry["outcomes"]]
            if [outcome.task_id for outcome in outcomes] != list(task_ids):
                raise ValueError("its samples are not these tasks' samples")
            return outcomes
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
            event("evaluate", "baseline.cache_ignored", level=logging.WARNING, file=str(self.path),
                  reason=f"{type(error).__name__}: {error}")
            return None

    def write(self, outcomes: Sequence[SampleOutcome]) -> None:
        """Atomically, so a run reading the file while another writes it sees the old entry or the new one.
        A cache that cannot be written costs the next run time, not this run its result."""
        entry = {"key": self.key, "inputs": dict(self.inputs), "outcomes": [dataclasses.asdict(o) for o in outcomes]}
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=f".{self.key}.", suffix=".tmp")
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump(entry, stream, separators=(",", ":"))
            os.replace(temporary, self.path)
        except OSError as error:
            event("evaluate", "baseline.cache_unwritable", level=logging.WARNING, file=str(self.path),
                  error=type(error).__name__)


def expected_task_ids(tasks: Sequence[Task], samples_per_task: int) -> list[str]:
    """The task id of every sample, in the order score_samples returns them."""
    return [task.task_id for task in tasks for _ in range(samples_per_task)]


def base_scores(cache: BaselineCache, task_ids: Sequence[str],
                score: Callable[[], list[SampleScore]]) -> tuple[list[SampleScore], str]:
    """The base model's sample scores, from the cache or from ``score()`` (then cached); and which it was."""
    cached = cached_scores(cache, task_ids)
    if cached is not None:
        return cached, "cache"
    return store_scores(cache, score()), "scored"


def cached_scores(cache: BaselineCache, task_ids: Sequence[str]) -> Optional[list[SampleScore]]:
    """The cached base scores, or None when the cache does not hold them for these samples."""
    cached = cache.read(task_ids)
    if cached is None:
        return None
    event("evaluate", "baseline.cached", file=str(cache.path), samples=len(cached),
          passed=sum(outcome.passed for outcome in cached))
    return [SampleScore.of(outcome) for outcome in cached]


def store_scores(cache: BaselineCache, scores: list[SampleScore]) -> list[SampleScore]:
    """``scores``, the base's just scored, after caching their outcomes for the next run."""
    cache.write([s.outcome for s in scores])
    event("evaluate", "baseline.scored", file=str(cache.path), samples=len(scores),
          passed=sum(s.outcome.passed for s in scores))
    return scores


@dataclass(frozen=True)
class Comparison:
    """The adapter's pass@k and gates beside its base model's; the base side is empty without tasks."""

    tasks: Sequence[Task]
    ks: Sequence[int]
    scores: Sequence[SampleScore]
    base: Sequence[SampleScore] = ()

    def pass_at_k(self, scores: Sequence[SampleScore]) -> dict[str, float]:
        return mean_pass_at_k(correct_per_task(self.tasks, scores), self.ks) if scores else {}

    def metrics(self) -> dict[str, Any]:
        """The Metrics fields: passAtK, and basePassAtK and passAtKDelta when the base was scored."""
        tuned = self.pass_at_k(self.scores)
        if not self.base:
            return {"pass_at_k": tuned, "base_pass_at_k": None, "pass_at_k_delta": None}
        base = self.pass_at_k(self.base)
        return {"pass_at_k": tuned, "base_pass_at_k": base,
                "pass_at_k_delta": {name: round(tuned[name] - base[name], DIGITS) for name in tuned}}

    def measurements(self) -> dict[str, Optional[float]]:
        """What the minImprovement gate reads: the delta at the first k; None (gate left out) without a base."""
        delta = self.metrics()["pass_at_k_delta"]
        return {IMPROVEMENT: delta[f"pass@{self.ks[0]}"] if delta else None}

    def annotate(self, gates: Gates) -> Gates:  # type: ignore[valid-type]
        """``gates`` with each per-sample gate's base value and delta filled in."""
        if not self.base:
            return gates
        base_outcomes = [score.outcome for score in self.base]
        updates = {}
        for gate in sample_gates():
            tuned, base = getattr(gates, gate.attr), gate.measure(base_outcomes, {})
            if tuned is not None and base is not None:
                updates[gate.attr] = tuned.model_copy(update={"base": base,
                                                              "delta": round(tuned.value - base, gate.digits)})
        return gates.model_copy(update=updates)


def judge(evaluation: Any, tasks: Sequence[Task], scores: Sequence[SampleScore], base: Sequence[SampleScore],
          perplexity: Optional[float]) -> tuple[dict[str, Any], Gates]:  # type: ignore[valid-type]
    """The pass@k Metrics fields and the gates, with the base beside the adapter: the one verdict of a run,
    whether its samples ran in this process or in the sandbox stage."""
    comparison = Comparison(tasks, evaluation.k, scores, base)
    gates = verdict(scores, evaluation.thresholds, {"perplexity": perplexity, **comparison.measurements()})
    return comparison.metrics(), comparison.annotate(gates)
