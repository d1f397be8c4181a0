"""compute_run_status: a CodexTrainingRun's phase and conditions from its Job and pods."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Mapping, Optional, Sequence

from codex_api import SpecError, contract, stages
from codex_api.gates import describe

from .. import names
from ..specs import RunView
from ..conditions import find_condition, parse_time, rfc3339, set_condition
from . import reasons
from .staged import StageJobs, Staged, staged_outcome

RUN_OWNED_FIELDS = (
    "phase", "conditions", "observedGeneration", "jobName", "attempts", "startTime", "completionTime",
    "durationSeconds", "metrics", "gates", "artifact", "lineage", "stages", "message",
)
TERMINAL_PHASES = ("Succeeded", "Failed")
REPORT_FIELDS = ("metrics", "gates", "artifact", "lineage")
# How much of a non-report termination message (a log tail) goes into status.message.
MAX_DETAIL = 300

# Exit codes without a readable report, mapped to reasons.
EXIT_REASONS = {
    contract.EXIT_INVALID: reasons.INVALID_DATA,
    contract.EXIT_GATES_NOT_MET: reasons.GATES_NOT_MET,
    contract.EXIT_PREEMPTED: reasons.PREEMPTED,
    contract.EXIT_TRANSIENT: reasons.TRANSIENT_ERROR,
}
JOB_FAILURE_REASONS = {
    "BackoffLimitExceeded": reasons.BACKOFF_LIMIT_EXCEEDED,
    "DeadlineExceeded": reasons.DEADLINE_EXCEEDED,
}
# Waiting reasons of a container that is simply on its way: not worth a status write each.
STARTING_REASONS = ("ContainerCreating", "PodInitializing")
STAGE_PHASES = {
    "evaluate": ("Evaluating", reasons.EVALUATING, "evaluating the adapter"),
    "save": ("Pushing", reasons.PUSHING, "saving the adapter"),
    "push": ("Pushing", reasons.PUSHING, "pushing the adapter"),
    "report": ("Pushing", reasons.PUSHING, "writing the report"),
}


def trainer_state(pod: Mapping[str, Any], key: str = "state") -> Mapping[str, Any]:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == names.TRAINER_CONTAINER:
            return status.get(key) or {}
    return {}


def terminated_state(pod: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    return trainer_state(pod).get("terminated")


def _started(pod: Mapping[str, Any]) -> bool:
    state = trainer_state(pod)
    return bool(state.get("running") or state.get("terminated") or trainer_state(pod, "lastState").get("terminated"))


def _pod_order(pod: Mapping[str, Any]) -> tuple:
    meta = pod.get("metadata") or {}
    created = parse_time(meta.get("creationTimestamp"))
    index = (meta.get("annotations") or {}).get(names.ANNOTATION_COMPLETION_INDEX, "0")
    # Newest first; among equals rank 0 (which writes the report in multi-node runs) wins.
    return (created.timestamp() if created else 0.0, -int(index) if str(index).isdigit() else 0, meta.get("name", ""))


def read_report(pod: Mapping[str, Any]) -> Optional[contract.TrainerReport]:
    """The trainer's termination message, or None when absent or not a report (e.g. log tail)."""
    terminated = terminated_state(pod)
    if not terminated or not terminated.get("message"):
        return None
    try:
        return contract.TrainerReport.model_validate(json.loads(terminated["message"]))
    except ValueError:
        return None


def _latest_ended(pods: Sequence[Mapping[str, Any]]) -> Optional[Mapping[str, Any]]:
    ended = [p for p in pods if terminated_state(p)]
    return max(ended, key=_pod_order, default=None)


def _ended_words(pod: Mapping[str, Any]) -> tuple[str, str]:
    """(reason, message) describing how a trainer pod ended."""
    report = read_report(pod)
    exit_code = (terminated_state(pod) or {}).get("exitCode")
    if report is not None:
        return report.reason, report.message or f"trainer exited with {exit_code}"
    reason = EXIT_REASONS.get(exit_code, reasons.JOB_FAILED)
    # Not a report: with FallbackToLogsOnError this is the log tail (the trainer never logs a token).
    detail = " ".join(str((terminated_state(pod) or {}).get("message") or "").split())[-MAX_DETAIL:]
    killed = (terminated_state(pod) or {}).get("reason")
    how = f" ({killed})" if killed and killed not in ("Error", "Completed") else ""
    return reason, f"trainer exited with code {exit_code}{how}" + (f": {detail}" if detail else "")


def _job_condition(job: Mapping[str, Any], type_: str) -> Optional[Mapping[str, Any]]:
    cond = find_condition((job.get("status") or {}).get("conditions"), type_)
    return cond if cond and cond.get("status") == "True" else None


def _phase(run: Mapping[str, Any], job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]],
           attempts: int) -> tuple[str, str, str]:
    """(phase, reason, message) of a run whose Job exists."""
    if _job_condition(job, "Complete"):
        report = read_report(_latest_ended(pods) or {})
        return "Succeeded", reasons.SUCCEEDED, (report.message if report and report.message
                                                else "training succeeded and the adapter was published")
    failed = _job_condition(job, "Failed")
    if failed:
        last = _latest_ended(pods)
        if last is not None and (read_report(last) or terminated_state(last).get("exitCode") in EXIT_REASONS):
            reason, message = _ended_words(last)
            if failed.get("reason") in JOB_FAILURE_REASONS and reason in (reasons.PREEMPTED, reasons.TRANSIENT_ERROR):
                reason = JOB_FAILURE_REASONS[failed["reason"]]
                message = f"{failed.get('message') or 'the training Job failed'}; last attempt: {message}"
            return "Failed", reason, message
        message = failed.get("message") or "the training Job failed"
        if last is not None:
            message = f"{message}; last attempt: {_ended_words(last)[1]}"
        return "Failed", JOB_FAILURE_REASONS.get(failed.get("reason"), reasons.JOB_FAILED), message
    if (job.get("spec") or {}).get("suspend"):
        queued = names.LABEL_KUEUE_QUEUE in ((job.get("metadata") or {}).get("labels") or {})
        return ("Pending", reasons.QUEUED, "the Job waits for Kueue to admit it") if queued else \
            ("Pending", reasons.SUSPENDED, "spec.job.suspend holds the Job")
    live = [p for p in pods if not terminated_state(p) and not (p.get("metadata") or {}).get("deletionTimestamp")]
    current = max(live, key=_pod_order, default=None)
    if current is not None and trainer_state(current).get("running"):
        progress = (run.get("status") or {}).get("progress") or {}
        return STAGE_PHASES.get(progress.get("stage"), ("Running", reasons.TRAINING, "training"))
    previous = _latest_ended(pods)
    succeeded = sum(1 for p in pods if (terminated_state(p) or {}).get("exitCode") == 0)
    if live == [] and succeeded and succeeded >= int((job.get("spec") or {}).get("completions") or 1):
        # Every trainer pod finished well; the Job's Complete condition follows in a moment.
        report = read_report(previous or {})
        return "Succeeded", reasons.SUCCEEDED, (report.message if report and report.message
                                                else "training succeeded and the adapter was published")
    if previous is not None and terminated_state(previous).get("exitCode") in contract.NON_RETRYABLE_EXIT_CODES:
        # podFailurePolicy fails the Job on this exit code: say so now, not "retrying" until it does.
        return ("Failed", *_ended_words(previous))
    if previous is not None:
        reason, message = _ended_words(previous)
        return "Pending", reasons.RETRYING, f"attempt {attempts} ended ({reason}: {message}); retrying"
    if current is not None:
        waiting = trainer_state(current).get("waiting") or {}
        if waiting.get("reason") and waiting["reason"] not in STARTING_REASONS:
            detail = f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
            return "Pending", reasons.POD_PENDING, f"trainer pod {current['metadata']['name']}: {detail}"
    # One message from Job creation until the container runs: each change would be a status write.
    return "Pending", reasons.POD_PENDING, "waiting for the trainer pod to start"


def _hash_pairs(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split(",") if "=" in item)


def _spec_condition(facts: RunView, job: Mapping[str, Any]) -> tuple[str, str, str]:
    """SpecApplied: whether the Job still runs what the spec says, and why not."""
    if facts.invalid is not None:
        return "False", reasons.INVALID_SPEC, str(facts.invalid)
    annotations = (job.get("metadata") or {}).get("annotations") or {}
    recorded = _hash_pairs(annotations.get(names.ANNOTATION_TRAINING_HASHES, ""))
    current = _hash_pairs(facts.training_hashes)
    changed = sorted(f for f, h in current.items() if f in recorded and recorded[f] != h)
    if changed:
        fields = ", ".join(f"spec.{f}" for f in changed)
        return "False", reasons.IMMUTABLE_FIELD_CHANGED, (
            f"{fields} changed after the run started and cannot change; the Job keeps training with the original "
            "values. Create a new run to train with the new ones")
    recorded_template = annotations.get(names.ANNOTATION_POD_TEMPLATE_HASH)
    desired = facts.template_hash
    if desired and recorded_template and recorded_template != desired:
        return "False", reasons.POD_TEMPLATE_CHANGED, (
            "the pod template (resources, image, volumes, ...) changed after the Job was created; a Job's pods are "
            "not mutated, so running and retried pods keep the old template. Create a new run to apply it")
    return "True", reasons.SPEC_APPLIED, "the Job runs the current spec"


def _attempts(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> int:
    """Trainer pods that started, or what the Job counted if its pods are gone."""
    counted = sum(int((job.get("status") or {}).get(k) or 0) for k in ("failed", "succeeded"))
    return max(sum(1 for p in pods if _started(p)), counted)


def _times(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]] = ()) -> tuple[Optional[str], Optional[str],
                                                                                     Optional[float]]:
    status = job.get("status") or {}
    start = parse_time(status.get("startTime")) or parse_time((job.get("metadata") or {}).get("creationTimestamp"))
    done = parse_time(status.get("completionTime"))
    failed = _job_condition(job, "Failed")
    if done is None and failed is not None:
        done = parse_time(failed.get("lastTransitionTime"))
    if done is None and pods:
        # The trainer ended and the Job has not caught up yet: its pod's finish time, for now.
        done = parse_time((terminated_state(_latest_ended(pods) or {}) or {}).get("finishedAt"))
    duration = round((done - start).total_seconds(), 1) if start and done else None
    return (rfc3339(start) if start else None), (rfc3339(done) if done else None), duration


def _report_fields(phase: str, pods: Sequence[Mapping[str, Any]], old: Mapping[str, Any],
                   trained: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """metrics, gates, artifact and lineage from the final report; earlier values while still running.
    ``trained``: a staged run's training pods, whose report (reason Trained) gives the training metrics
    and lineage until the publish stage's report has them all."""
    fields = {key: old.get(key) for key in REPORT_FIELDS}
    report = read_report(_latest_ended(trained) or {}) if trained else None
    if report is not None and report.reason == contract.REASON_TRAINED:
        wire = report.to_wire()
        fields.update({key: wire[key] for key in ("metrics", "lineage") if wire.get(key) is not None})
    if phase in TERMINAL_PHASES:
        report = read_report(_latest_ended(pods) or {})
        if report is not None:
            wire = report.to_wire()
            fields.update({key: wire.get(key) for key in REPORT_FIELDS if wire.get(key) is not None})
    return fields


def _invalid_status(old: Mapping[str, Any], generation: Optional[int], error: SpecError,
                    now: datetime) -> dict[str, Any]:
    conditions = list(old.get("conditions") or [])
    message = str(error)
    conditions = set_condition(conditions, "Ready", "False", reasons.INVALID_SPEC, message, now, generation)
    conditions = set_condition(conditions, "Progressing", "False", reasons.INVALID_SPEC, message, now, generation)
    status = {key: old.get(key) for key in RUN_OWNED_FIELDS}
    status.update(phase="Failed", conditions=conditions, observedGeneration=generation, message=message)
    return status


def _stalled(job: Mapping[str, Any], later: Optional[StageJobs]) -> bool:
    """A staged run whose last Job succeeded and whose next stage has no Job: the apiserver refused it."""
    if later is None:
        return False
    chain = [job, *(later.jobs[stage][0] for stage in stages.STAGES[1:] if stage in later.jobs)]
    return len(chain) < len(stages.STAGES) and _job_condition(chain[-1], "Complete") is not None


def compute_run_status(run: Mapping[str, Any], job: Optional[Mapping[str, Any]],
                       pods: Sequence[Mapping[str, Any]], now: datetime, facts: RunView,
                       later: Optional[StageJobs] = None) -> dict[str, Any]:
    """The operator-owned status fields (RUN_OWNED_FIELDS) of ``run``.

    ``job`` is the run's training Job (None before it exists), ``pods`` its trainer pods, ``now``
    is used only for conditions that flip, and ``facts`` is the view of the run's current spec
    (specs.RunView): whether it is valid, and the training and pod-template hashes it would
    build, to explain changes that cannot reach a running Job. ``later`` holds the sandbox and
    publish Jobs of a run with code tasks (status/staged.py); None for a run that is one Job.
    """
    old = run.get("status") or {}
    generation = (run.get("metadata") or {}).get("generation")
    invalid = facts.invalid
    staged: Optional[Staged] = None
    if invalid is not None and (job is None or _stalled(job, later)):
        return _invalid_status(old, generation, invalid, now)
    if job is None:
        if old.get("phase") in TERMINAL_PHASES:
            # A finished run whose Job was cleaned up (ttlSecondsAfterFinished) keeps its status.
            return _kept(old, generation)
        phase, reason, message = "Pending", reasons.CREATING, "creating the training Job"
        attempts, (start, done, duration), job_name = 0, (None, None, None), None
        final_pods: Sequence[Mapping[str, Any]] = ()
    else:
        attempts = _attempts(job, pods)
        read = _read_stages(run, job, pods, attempts, later)
        if read is None:
            return _kept(old, generation)  # a later stage's Job was cleaned up after the run ended
        (phase, reason, message), final_job, final_pods, staged = read
        start, done, duration = _span(job, final_job, final_pods) if phase in TERMINAL_PHASES \
            else (_times(job)[0], None, None)
        job_name = job["metadata"]["name"]

    report_fields = _report_fields(phase, final_pods, old, pods if staged is not None else ())
    conditions = _run_conditions(old, (phase, reason, message), report_fields.get("gates"), facts, job, now,
                                 generation)
    return {
        "phase": phase,
        "conditions": conditions,
        "observedGeneration": generation,
        "jobName": job_name,
        "attempts": attempts,
        "startTime": start,
        "completionTime": done,
        "durationSeconds": duration,
        **report_fields,
        "stages": staged.entries if staged is not None else None,
        "message": message,
    }


def _run_conditions(old: Mapping[str, Any], outcome: tuple[str, str, str], gates: Optional[Mapping[str, Any]],
                    facts: RunView, job: Optional[Mapping[str, Any]], now: datetime,
                    generation: Optional[int]) -> list:
    """Ready, Progressing, GatesPassed and (once there is a Job) SpecApplied."""
    phase, reason, message = outcome
    terminal = phase in TERMINAL_PHASES
    conditions = list(old.get("conditions") or [])
    conditions = set_condition(conditions, "Ready", "True" if phase == "Succeeded" else "False", reason, message,
                               now, generation)
    conditions = set_condition(conditions, "Progressing", "False" if terminal else "True", reason, message,
                               now, generation)
    conditions = _gates_condition(conditions, gates, terminal, now, generation)
    if job is not None:
        status_, spec_reason, spec_message = _spec_condition(facts, job)
        conditions = set_condition(conditions, "SpecApplied", status_, spec_reason, spec_message, now, generation)
    return conditions


def _read_stages(run: Mapping[str, Any], job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], attempts: int,
                 later: Optional[StageJobs]):
    """(outcome, the Job that ends the run and its pods, the staged reading or None); None when a
    terminal run's later stage is gone (its status is kept)."""
    if later is None:
        return _phase(run, job, pods, attempts), job, pods, None
    staged = staged_outcome(job, pods, later, lambda j, p: _phase(run, j, p, _attempts(j, p)))
    old = run.get("status") or {}
    refused = (find_condition(old.get("conditions"), "Ready") or {}).get("reason") == reasons.INVALID_SPEC
    if old.get("phase") in TERMINAL_PHASES and not refused and staged.outcome[0] not in TERMINAL_PHASES:
        return None
    return staged.outcome, staged.final_job, staged.final_pods, staged


def _kept(old: Mapping[str, Any], generation: Optional[int]) -> dict[str, Any]:
    return {key: old.get(key) for key in RUN_OWNED_FIELDS} | {"observedGeneration": generation}


def _span(first: Mapping[str, Any], last: Mapping[str, Any], last_pods: Sequence[Mapping[str, Any]]):
    """(start, completion, duration) of a run from its first Job's start to its last Job's end."""
    start = _times(first)[0]
    _, done, _ = _times(last, last_pods)
    began, ended = parse_time(start), parse_time(done)
    return start, done, round((ended - began).total_seconds(), 1) if began and ended else None


def _gates_condition(conditions: list, gates: Optional[Mapping[str, Any]], terminal: bool, now: datetime,
                     generation: Optional[int]) -> list:
    """GatesPassed: the verdict and, gate by gate, how each measured against its threshold."""
    if gates is not None:
        passed = bool(gates.get("passed"))
        return set_condition(conditions, "GatesPassed", "True" if passed else "False",
                             reasons.GATES_PASSED if passed else reasons.GATES_NOT_MET, _gates_message(gates), now,
                             generation)
    if terminal:
        return set_condition(conditions, "GatesPassed", "False", reasons.GATES_NOT_EVALUATED,
                             "the run ended before its gates were evaluated", now, generation)
    return conditions


def _gates_message(gates: Mapping[str, Any]) -> str:
    """The GatesPassed message; the gate registry says which gates there are and how each reads."""
    return describe(gates)
