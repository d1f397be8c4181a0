"""The publish stage of a staged run (codex_api.stages): judge, save, push, report.

The samples are scored as the single-process run scores them (evaluation.py: the static checks, then
:func:`~codex_trainer.evaluation.combine`), with the sandbox stage's statuses standing in for the run
(their elapsed time is not returned: 0.0); the gates and the base comparison are
:func:`~codex_trainer.baseline.judge`'s, the report :func:`~codex_trainer.report.verdict_report`'s.
Unlike the single-Job run, the adapter goes to the Hub only when the gates pass.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from codex_api import stages
from codex_api.training_run import CodexTrainingRun, Progress

from .baseline import BaselineCache, cached_scores, judge, store_scores
from .config import TrainerEnv
from .errors import HandoffError, TrainerError
from .evaluation import combine, findings_of, samples_table
from .gates import SampleScore
from .handoff import adapter_dir, handoff_file, read_handoff
from .logs import Redactor, event
from .programs import Batch
from .publish import (output_dir, push_adapter, saved_artifact, summary, write_model_card,
                      write_results)
from .report import build_report, verdict_report, write_report
from .sandbox import SandboxResult
from .sinks import Sink


class Publisher:
    """Publish what the train stage handed off, judged on what the sandbox stage returned.

    ======================  ================================================================
    spec field              where it is used
    ======================  ================================================================
    evaluation              the gates and pass@k (baseline.judge) over the hand-off's samples
    output.pvc              the adapter folder (else scratch) and, at its root, the base cache
    output.hub              the push, only when the gates pass
    ======================  ================================================================

    Raises:
        HandoffError: the hand-off, the sandbox's results (``CODEX_SANDBOX_RESULTS``) or the cached
            base outcomes are missing or not what was handed off (exit 42).
        InvalidSpecError: the Hub refused the token (exit 42).
        TransientError: the Hub kept failing (exit 45).
    """

    def __init__(self, run: CodexTrainingRun, env: TrainerEnv, work_dir: Path, *, sinks: Sequence[Sink] = (),
                 hub_endpoint: Optional[str] = None, push_base_delay: float = 1.0):
        self.run, self.spec, self.env, self.work_dir = run, run.spec, env, work_dir
        self.sinks, self.hub_endpoint, self.push_base_delay = list(sinks), hub_endpoint, push_base_delay
        self.redact = Redactor([env.hf_token])
        self.metrics = self.lineage = self.gates = self.artifact = None
        self.baseline: Optional[dict[str, Any]] = None  # where the base's outcomes came from, with tasks
        self.folder = output_dir(self.spec, env)
        self.timings: dict[str, float] = {}

    def steps(self) -> tuple[Callable[[], Any], ...]:
        return self.load, self.score, self.save, self.push, self.report

    def load(self) -> None:
        self._set_stage("push")
        self.handoff = read_handoff(handoff_file(self.work_dir))
        self.metrics, self.lineage = self.handoff.metrics, self.handoff.lineage
        self.timings = dict(self.handoff.results.get("timings") or {})
        if self.env.sandbox_results is None:
            raise HandoffError(f"{stages.ENV_SANDBOX_RESULTS} is not set: the sandbox stage's results did not "
                               "reach the publish stage")
        try:
            self.statuses = stages.SandboxReport.read(self.env.sandbox_results, expected=len(self.handoff.samples()))
        except stages.ResultsError as error:
            raise HandoffError(f"{stages.ENV_SANDBOX_RESULTS}: {error}") from None

    def score(self) -> None:
        started = time.monotonic()
        samples = self.handoff.samples()
        batch = Batch.of(samples)
        ran = {index: SandboxResult(self.statuses[index], None, 0.0) for index in batch.runnable}
        scores = combine(samples, batch, findings_of(samples), ran)
        tuned = len(self.handoff.tuned_samples())
        base = self._base_scores(scores[tuned:]) if self.handoff.tasks else ()
        pass_metrics, self.gates = judge(self.spec.evaluation, self.handoff.tasks, scores[:tuned], base,
                                         self.metrics.perplexity)
        self.metrics = self.metrics.model_copy(update=pass_metrics)
        self.samples = samples_table(scores[:tuned], self.handoff.completions)
        self.timings["publish_score_seconds"] = round(time.monotonic() - started, 2)
        event("evaluate", "done", **self.metrics.to_wire(), gates=self.gates.to_wire())

    def _base_scores(self, scored: list[SampleScore]) -> list[SampleScore]:
        """The base's scores: those just scored from the sandbox's statuses (then cached) when the hand-off has
        base completions, else the cache's, where the train stage found them; gone since, they cannot be
        regenerated here."""
        cache = BaselineCache(Path(self.handoff.baseline.directory), self.handoff.baseline.inputs)
        self.baseline = {"source": "cache" if self.handoff.base_completions is None else "scored",
                         "file": str(cache.path), "key": cache.key}
        if self.handoff.base_completions is not None:
            return store_scores(cache, scored)
        cached = cached_scores(cache, [task.task_id for task, _ in self.handoff.tuned_samples()])
        if cached is None:
            raise HandoffError(f"the base model's cached scores {cache.path} vanished after the train stage found "
                               "them; re-create the run so that its train stage generates them again")
        return cached

    def save(self) -> None:
        source = adapter_dir(self.work_dir)
        if not (source / "adapter_config.json").is_file():
            raise HandoffError(f"no adapter in {source}: the train stage's hand-off is incomplete; re-create the run")
        self.artifact = saved_artifact(self.spec, source)
        if self.artifact.revision != f"sha256:{self.handoff.adapter.sha256}":
            raise HandoffError(f"the adapter in {source} is not the one the train stage saved; re-create the run")
        shutil.copytree(source, self.folder, dirs_exist_ok=True)
        self.results = {**self.handoff.results, **({"baseline": self.baseline} if self.baseline else {}),
                        **self._summary(), "samples": self.samples}
        write_model_card(self.folder, self.run, self.results)
        write_results(self.folder, self.results)
        event("save", "saved", dir=str(self.folder), bytes=self.artifact.size_bytes, revision=self.artifact.revision)

    def push(self) -> None:
        if self.spec.output.hub is None:
            return
        if not self.gates.passed:
            event("push", "skipped", reason="gates not met", repo=self.spec.output.hub.repo_id)
            return
        self.artifact = push_adapter(self.folder, self.run, self.artifact, self.env.hf_token,
                                     endpoint=self.hub_endpoint, base_delay=self.push_base_delay)
        self.results.update(self._summary())
        write_results(self.folder, self.results)

    def _summary(self) -> dict[str, Any]:
        return summary(self.spec, {"metrics": self.metrics, "gates": self.gates, "artifact": self.artifact,
                                   "lineage": self.lineage}, self.handoff.results.get("data"), self.timings)

    def report(self) -> int:
        self._set_stage("report")
        report, code = verdict_report(self.gates, self.redact, metrics=self.metrics, artifact=self.artifact,
                                      lineage=self.lineage)
        write_report(report, self.env.termination_message_path)
        return code

    def report_failure(self, error: TrainerError) -> int:
        write_report(build_report("Failed", error.reason, str(error), self.redact, metrics=self.metrics,
                                  artifact=self.artifact, lineage=self.lineage), self.env.termination_message_path)
        return error.exit_code

    def _set_stage(self, stage: str) -> None:
        """Only the stage and the time: the step counts the train stage left in status.progress stay."""
        progress = Progress(stage=stage, updated_at=dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
        for sink in self.sinks:
            sink(progress.model_dump(by_alias=True, mode="json", include={"stage", "updated_at"}), force=True)
