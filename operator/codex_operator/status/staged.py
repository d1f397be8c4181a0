"""The phase and status.stages of a run with code tasks (codex_api.stages): train, sandbox, publish.

The training Job's outcome is read as for any run; its success only means "trained", and the run
goes on to Evaluating (the sandbox) and Pushing (publish). The run ends with the publish Job, or
with the first stage that fails: a failed sandbox reads SandboxFailed, with how its last pod
ended (OOMKilled, the deadline, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from codex_api import stages

from . import reasons

Pods = Sequence[Mapping[str, Any]]
# (phase, reason, message), as run._phase computes it for one Job and its pods.
Outcome = tuple[str, str, str]
STAGE_PHASE = {"Succeeded": "Succeeded", "Failed": "Failed", "Running": "Running", "Evaluating": "Running",
               "Pushing": "Running"}


@dataclass(frozen=True)
class StageJobs:
    """The Jobs (and their pods) of the stages after training, and the sandbox's progress."""

    jobs: Mapping[str, tuple[Mapping[str, Any], Pods]] = field(default_factory=dict)
    samples: Optional[tuple[int, int]] = None


@dataclass(frozen=True)
class Staged:
    """What the staged run amounts to: its phase, the stage entries, and the pods of the stage that
    ended it (whose report fills metrics, gates and artifact), or of the training Job."""

    outcome: Outcome
    entries: list[dict[str, Any]]
    final_job: Mapping[str, Any]
    final_pods: Pods


def _entry(stage: str, job: Optional[Mapping[str, Any]], phase: str, message: Optional[str] = None,
           samples: Optional[tuple[int, int]] = None) -> dict[str, Any]:
    """One status.stages item; ``phase`` is what run._phase read from the stage's Job."""
    entry: dict[str, Any] = {"name": stage, "phase": STAGE_PHASE.get(phase, "Pending")}
    if job is not None:
        entry["jobName"] = job["metadata"]["name"]
    if message:
        entry["message"] = message
    if samples is not None:
        entry["samplesDone"], entry["samplesTotal"] = samples
    return entry


def staged_outcome(train: Mapping[str, Any], train_pods: Pods, later: StageJobs,
                   phase_of: Callable[[Mapping[str, Any], Pods], Outcome]) -> Staged:
    """The run's outcome from its stages in order; ``phase_of(job, pods)`` reads one Job."""
    trained = phase_of(train, train_pods)
    if trained[0] == "Pushing":  # the training Job saves the adapter and the hand-off; publishing comes later
        trained = ("Evaluating", reasons.EVALUATING, "saving the adapter and the completions for the sandbox")
    if trained[0] != "Succeeded":
        return Staged(trained, [_entry(stages.TRAIN, train, trained[0], trained[2]),
                                _entry(stages.SANDBOX, None, "Pending"), _entry(stages.PUBLISH, None, "Pending")],
                      train, train_pods)
    entries = [_entry(stages.TRAIN, train, "Succeeded", trained[2])]
    sandbox, sandbox_pods = later.jobs.get(stages.SANDBOX, (None, ()))
    if sandbox is None:
        outcome = ("Evaluating", reasons.EVALUATING, "trained; starting the sandbox that runs the generated code")
        return Staged(outcome, entries + [_entry(stages.SANDBOX, None, "Pending"),
                                          _entry(stages.PUBLISH, None, "Pending")], train, train_pods)
    ran = phase_of(sandbox, sandbox_pods)
    outcome = _sandbox_outcome(ran, later.samples)
    entries.append(_entry(stages.SANDBOX, sandbox, ran[0], outcome[2], later.samples))
    if ran[0] != "Succeeded":
        return Staged(outcome, entries + [_entry(stages.PUBLISH, None, "Pending")], sandbox, sandbox_pods)
    publish, publish_pods = later.jobs.get(stages.PUBLISH, (None, ()))
    if publish is None:
        outcome = ("Pushing", reasons.PUSHING, "the generated code ran; starting the publish stage")
        return Staged(outcome, entries + [_entry(stages.PUBLISH, None, "Pending")], sandbox, sandbox_pods)
    raw = published = phase_of(publish, publish_pods)
    if raw[0] not in ("Succeeded", "Failed"):
        published = ("Pushing", reasons.PUSHING,
                     "judging the gates and publishing the adapter" if raw[0] != "Pending" else raw[2])
    return Staged(published, entries + [_entry(stages.PUBLISH, publish, raw[0], published[2])], publish,
                  publish_pods)


def _sandbox_outcome(outcome: Outcome, samples: Optional[tuple[int, int]]) -> Outcome:
    """The run's phase while (or as) its sandbox stage ends."""
    phase, _, message = outcome
    if phase == "Succeeded":
        return ("Succeeded", reasons.SUCCEEDED, "every generated program ran")
    if phase == "Failed":
        return ("Failed", reasons.SANDBOX_FAILED, f"the sandbox stage failed: {message}")
    if phase == "Pending":
        return ("Evaluating", reasons.EVALUATING, f"sandbox: {message}")
    done = f": {samples[0]}/{samples[1]} programs run" if samples else ""
    return ("Evaluating", reasons.EVALUATING, f"running the generated code in the sandbox{done}")
