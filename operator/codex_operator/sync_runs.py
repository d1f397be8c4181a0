"""Reconciling a CodexTrainingRun: build the children, apply them, write status once.

:func:`reconcile_run` is level-triggered: whatever event queued the run (its own change, its
Job's or a pod's), it compares the newest run, Job and pods in the indexes with what they
should be, and writes only the difference.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timezone
from typing import Any, Iterable, Optional

import kopf
from codex_api import CodexTrainingRun, stages

from . import metrics, names
from .builders.configmap import build_spec_configmap
from .builders.job import build_job, job_mutable_fields
from .builders.pvc import build_checkpoint_pvc
from .builders.rbac import build_trainer_rbac
from .builders.service import build_workers_service
from .builders.stages import build_sandbox_network_policy, build_work_pvc
from .conditions import find_condition
from .k8s import NORMAL, URGENT, ApiError, NotOwnedError
from .state import Key, OperatorState
from .refusals import ChildRefused, half_made, refusal, refuse
from .specs import RunView
from .stages import advance, follow_sandbox, run_jobs
from .status import RUN_OWNED_FIELDS, StageJobs, compute_run_status
from .status import reasons
from .views import slim_job
from .workqueue import Requeue

KIND = "CodexTrainingRun"
TERMINAL = ("Succeeded", "Failed")
# Reasons whose transition is announced as a Warning event.
WARNING_REASONS = {reasons.RETRYING, reasons.INVALID_SPEC, reasons.IMMUTABLE_FIELD_CHANGED,
                   reasons.POD_TEMPLATE_CHANGED}


def run_key(namespace: str, name: str) -> tuple[str, str, str]:
    return ("run", namespace, name)


# One chain of creation waves: each wave is created side by side, the next once it exists.
Chain = list[list[dict[str, Any]]]


def build_run_children(run: CodexTrainingRun, cfg) -> dict[str, Chain]:
    """Everything a run owns, as two chains of creation waves, applied one after the other.

    ``job``: what the Job's pods need when the Job controller creates them (their ServiceAccount,
    the spec ConfigMap, the checkpoint PVC, the workers' Service), then the Job, last.
    ``rbac``: the Role, then its RoleBinding (the apiserver checks a binding against the Role it
    grants: RBAC escalation prevention). The trainer needs them only to report progress, and
    retries its first progress patches while they appear, so they come after the Job.
    """
    account, *grants = build_trainer_rbac(run) or [None]
    first = [build_spec_configmap(run), account, build_checkpoint_pvc(run), build_workers_service(run),
             build_work_pvc(run)]
    if stages.is_staged(run.spec):  # in place before any sandbox pod can exist
        first.append(build_sandbox_network_policy(run))
    return {"job": [[c for c in first if c], [build_job(run, cfg)]], "rbac": [[g] for g in grants]}


def all_children(chains: dict[str, Chain]) -> list[dict[str, Any]]:
    return [child for chain in chains.values() for wave in chain for child in wave]


# Children whose desired state may change with the spec (the evaluation and output settings the
# trainer reads): one found existing is brought up to date by server-side apply.
APPLIED_KINDS = ("ConfigMap",)


async def apply_chain(state: OperatorState, chain: Chain, owner_uid: str, priority: int,
                      made: Optional[list[tuple[dict[str, Any], bool]]] = None) -> list[dict[str, Any]]:
    """Create-or-find each wave's children side by side, wave after wave; the last wave's live objects.
    Safe to repeat after a crash: names are deterministic and a 409 is verified to be owned. Each
    child found or created is added to ``made`` as (child, created), a wave's whole outcome before
    its first error is raised."""
    live: list = []
    try:
        for wave in chain:
            results = await asyncio.gather(*(state.kube.ensure(child, owner_uid, priority,
                                                               child["kind"] in APPLIED_KINDS)
                                             for child in wave), return_exceptions=True)
            outcomes = [(child, result) for child, result in zip(wave, results) if isinstance(result, tuple)]
            if made is not None:
                made.extend((child, created) for child, (_, created) in outcomes)
            failed = next((result for result in results if isinstance(result, BaseException)), None)
            if failed is not None:
                raise failed
            live = [obj for _, (obj, _) in outcomes]
    except NotOwnedError as error:
        raise Requeue(f"{error}; waiting for it to be removed", delay=30)
    return live


async def create_job_path(state: OperatorState, key: Key, owner: dict[str, Any],
                          run: CodexTrainingRun) -> tuple[dict[str, Any], Chain]:
    """Build and adopt everything the run owns and create the Job's path; returns the live Job and
    the RBAC chain still to apply.

    The Job's path holds one of ``state.run_slots`` from building to the Job's creation, at
    URGENT priority: under a burst (a thousand new runs) every run's Job still comes before
    anything else, and the runs not yet admitted wait with nothing built, so the operator's
    memory follows the API's pace rather than the size of the burst. The caller applies the
    Role and RoleBinding after, at normal priority, holding nothing else while they wait.
    """
    async with state.run_slots:
        chains = build_run_children(run, state.cfg)
        kopf.append_owner_reference(all_children(chains), owner=owner)
        made: list[tuple[dict[str, Any], bool]] = []
        try:
            (job,) = await apply_chain(state, chains["job"], owner["metadata"]["uid"], URGENT, made)
        except ApiError as error:
            await refuse(state.kube, error, KIND, half_made(made))
    tracked = state.record(key)
    tracked.job = slim_job(job)
    return tracked.job, chains["rbac"]


def select_job(jobs: Optional[Iterable[dict[str, Any]]], run_uid: str) -> Optional[dict[str, Any]]:
    """The run's training Job among those indexed under its name (an older run of the same name may linger)."""
    return run_jobs(jobs, run_uid).get(stages.TRAIN)


def select_pods(pods: Optional[Iterable[dict[str, Any]]], job: Optional[dict[str, Any]]) -> list[dict[str, Any]]:
    if job is None:
        return []
    job_uid = job["metadata"].get("uid")
    return [p for p in pods or () if (names.controller_owner(p, "Job") or (None, None))[1] == job_uid]


def job_finished(job: dict[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions")
    return any((find_condition(conditions, t) or {}).get("status") == "True" for t in ("Complete", "Failed"))


async def patch_job_fields(state: OperatorState, run: CodexTrainingRun, job: dict[str, Any]) -> None:
    """Honour the Job fields that may change on a live Job: suspend, deadline, TTL."""
    live = job.get("spec") or {}
    changes = {k: v for k, v in job_mutable_fields(run).items() if live.get(k) != v and not (v is None and k not in live)}
    if changes and not job_finished(job):
        await state.kube.patch("batch/v1", "Job", run.metadata.namespace, job["metadata"]["name"], {"spec": changes})


async def apply_spec_configmap(state: OperatorState, run: CodexTrainingRun, owner: dict[str, Any]) -> None:
    """Re-render the trainer's spec (server-side apply) so that the next attempt reads the new
    evaluation/output settings; an unchanged rendering is a no-op on the apiserver's side."""
    configmap = build_spec_configmap(run)
    kopf.append_owner_reference(configmap, owner=owner)
    await state.kube.apply(configmap)


def run_view(state: OperatorState, key: Key, body: dict[str, Any]) -> RunView:
    """The run's spec view for its generation: parsed once per generation, whatever queued it."""
    tracked = state.record(key)
    view = tracked.view
    if view is None or not view.describes(body):
        view = RunView.of(body, state.cfg)
        tracked.view = view.kept()
    return view


def announce(state: OperatorState, body: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> None:
    """One Event per transition of phase or reason, and for each new SpecApplied refusal."""
    ready_before = find_condition(before.get("conditions"), "Ready") or {}
    ready_after = find_condition(after.get("conditions"), "Ready") or {}
    if (before.get("phase"), ready_before.get("reason")) != (after.get("phase"), ready_after.get("reason")):
        reason = ready_after.get("reason", "")
        warning = after.get("phase") == "Failed" or reason in WARNING_REASONS
        state.post_event(body, "Warning" if warning else "Normal", reason,
                         f"{after.get('phase')}: {after.get('message', '')}")
        if after.get("phase") == "Failed" and reason == reasons.GATES_NOT_MET:
            metrics.GATE_FAILURES.inc()
        if after.get("phase") in ("Succeeded", "Failed") and after.get("durationSeconds") is not None:
            metrics.JOB_DURATION.labels(after["phase"]).observe(after["durationSeconds"])
    spec_before = find_condition(before.get("conditions"), "SpecApplied") or {}
    spec_after = find_condition(after.get("conditions"), "SpecApplied") or {}
    if spec_after.get("status") == "False" and spec_after.get("reason") != spec_before.get("reason") \
            and spec_after.get("reason") != reasons.INVALID_SPEC:
        state.post_event(body, "Warning", spec_after["reason"], spec_after.get("message", ""))


async def sync_run_status(state: OperatorState, key: Key, body: dict[str, Any], stored: dict[str, Any],
                          job: Optional[dict[str, Any]], pods: list[dict[str, Any]], view: RunView,
                          later: Optional[StageJobs] = None) -> None:
    """Compute the run's status and write the fields that changed, if any (zero writes when stable)."""
    meta = body["metadata"]
    computed = compute_run_status({**body, "status": stored}, job, pods, datetime.now(timezone.utc), view, later)
    state.set_run_phase(key, computed.get("phase"))
    if await state.write_status(key, KIND, meta, stored, computed, RUN_OWNED_FIELDS):
        announce(state, body, stored, computed)


def current_job(state: OperatorState, key: Key, run: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The run's Job: the indexed one, else the one the operator created or saw finish and go."""
    uid = run["metadata"]["uid"]
    tracked = state.record(key)
    job = select_job(state.views.job_index.get((run["metadata"]["namespace"], run["metadata"]["name"])), uid)
    if job is not None:
        tracked.job = None
        return job
    known = tracked.job
    return known if known is not None and (names.controller_owner(known, KIND) or (None, None))[1] == uid else None


def job_gone(state: OperatorState, key: Key, job: dict[str, Any]) -> None:
    """A Job was deleted: one that finished still tells the run how it ended (until its status says
    so); one deleted before it finished is created again by the next reconcile (the retry resumes
    from the checkpoint volume)."""
    tracked = state.tracked.get(key)  # none once the run itself is gone
    if tracked is not None:
        tracked.job = slim_job(job) if job_finished(job) else None


def ran_to_its_end(stored: dict[str, Any]) -> bool:
    """Whether the run's status is terminal for a reason other than an invalid spec (which a fixed
    spec takes up again)."""
    reason = (find_condition(stored.get("conditions"), "Ready") or {}).get("reason")
    return stored.get("phase") in TERMINAL and reason != reasons.INVALID_SPEC


def needs_children(job: Optional[dict[str, Any]], stored: dict[str, Any]) -> bool:
    """Whether to create (or find) the run's children: none yet; a Job deleted before it finished;
    a creation cut short (status names the Job only once the Role and RoleBinding exist too); or
    a spec fixed after it was reported invalid. Never for a run that ran to its end."""
    return not ran_to_its_end(stored) and (job is None or not stored.get("jobName"))


async def sync_children(state: OperatorState, key: Key, run: dict[str, Any], view: RunView,
                        job: Optional[dict[str, Any]], stored: dict[str, Any]) -> tuple[Optional[dict[str, Any]], Chain]:
    """Create the run's Job path, or apply what a live Job can take of a changed spec; the training Job
    and the RBAC chain still to apply."""
    if needs_children(job, stored):
        with metrics.CHILDREN_SECONDS.time():
            return await create_job_path(state, key, run, view.run(run))
    if job is not None and stored.get("observedGeneration") != run["metadata"].get("generation"):
        # The spec changed since status last described it: apply what a live Job can take.
        parsed = view.run(run)
        await apply_spec_configmap(state, parsed, run)
        await patch_job_fields(state, parsed, job)
    return job, []


def refused(state: OperatorState, key: Key, view: RunView, error: Exception) -> RunView:
    """The run's view once the apiserver refused a child built from it: invalid, for this generation
    (re-raises ``error`` when it is not a refusal)."""
    spec_error = error.error if isinstance(error, ChildRefused) else \
        refusal(error, KIND) if isinstance(error, ApiError) else None
    if spec_error is None:
        raise error
    view = dataclasses.replace(view.kept(), invalid=spec_error)
    state.record(key).view = view
    return view


async def reconcile_run(state: OperatorState, key: Key) -> None:
    """Bring one run's children and status in line with its spec (no API call when they are)."""
    _, namespace, name = key
    run = state.views.run(namespace, name)
    if run is None or run["metadata"].get("deletionTimestamp"):
        return  # the owner references let the garbage collector remove the children
    job = current_job(state, key, run)
    stored = state.stored_status(key, run)
    view = run_view(state, key, run)
    if view.invalid is None:
        try:
            job, grants = await sync_children(state, key, run, view, job, stored)
            view = view.kept()  # the parsed run stays out of the wait for the RBAC
            await apply_chain(state, grants, run["metadata"]["uid"], NORMAL)
        except (ApiError, ChildRefused) as error:
            view = refused(state, key, view, error)
    indexed = state.views.pod_index.get((namespace, name))

    def pods_of(stage_job: Optional[dict[str, Any]]) -> list[dict[str, Any]]:
        return select_pods(indexed, stage_job)

    later = None
    if view.staged:
        jobs = {**run_jobs(state.views.job_index.get((namespace, name)), run["metadata"]["uid"]),
                **({stages.TRAIN: job} if job is not None else {})}
        if view.invalid is None:
            try:
                jobs = await advance(state, run, view, jobs, pods_of, terminal=ran_to_its_end(stored))
            except ApiError as error:
                view = refused(state, key, view, error)
        await follow_sandbox(state, key, jobs, pods_of)
        later = StageJobs({stage: (j, pods_of(j)) for stage, j in jobs.items() if stage != stages.TRAIN},
                          state.record(key).samples)
    await sync_run_status(state, key, run, stored, job, pods_of(job), view.kept(), later)
