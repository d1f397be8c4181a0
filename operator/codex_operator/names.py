"""Every name, label and selector the operator gives its children, in one place.

Builders and watches both import from here, so what is created and what is selected
cannot drift apart. Names are derived deterministically from the owner's name, so a
restart at any point finds (instead of duplicating) what an earlier process created.
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Any, Mapping

from codex_api import stages

OPERATOR_NAME = "codex-operator"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_INSTANCE = "app.kubernetes.io/instance"
# The owner's name, made label-safe (names over 63 characters are shortened with a hash).
LABEL_TRAINING_RUN = "codex.dev/training-run"
LABEL_MODEL = "codex.dev/codexmodel"
# The owner's full name, for objects whose owner reference points elsewhere (pods -> Job).
ANNOTATION_TRAINING_RUN = "codex.dev/training-run"
# Hash of the Job's pod template as built; a different desired hash means the spec moved on.
ANNOTATION_POD_TEMPLATE_HASH = "codex.dev/pod-template-hash"
# Per-field hashes of the immutable training fields the Job was built from.
ANNOTATION_TRAINING_HASHES = "codex.dev/training-hashes"
# The adapter revision on a serving pod template: a new value rolls the Deployment.
ANNOTATION_ADAPTER_REVISION = "codex.dev/adapter-revision"
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
# Set by the Job controller on each pod of an Indexed Job.
ANNOTATION_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"

COMPONENT_TRAINER = "trainer"
COMPONENT_SERVER = "server"

# Roles: the suffix each child gets after its owner's name.
ROLE_SPEC = "spec"
ROLE_CHECKPOINTS = "checkpoints"
ROLE_TRAINER = "trainer"
ROLE_WORKERS = "workers"
ROLE_JOB = "train"
ROLE_SERVER = "server"
ROLE_WORK = "work"
# The stage of a staged run (codex_api.stages) a Job runs; a Job without it is the training Job.
ANNOTATION_STAGE = "codex.dev/stage"

TRAINER_CONTAINER = "trainer"
SERVER_CONTAINER = "server"

# A DNS-1123 label (Service, pod hostname) is at most 63 characters; Indexed Job pods are
# named <job>-<index>-<random>, so Job names keep room for the suffixes.
MAX_CHILD_NAME = 52
MAX_LABEL_VALUE = 63

_LABEL_VALUE_INVALID = re.compile(r"[^A-Za-z0-9._-]")


def short_hash(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def child_name(owner: str, role: str, max_length: int = MAX_CHILD_NAME) -> str:
    """``<owner>-<role>``, shortened with a hash of the owner's name when too long."""
    name = f"{owner}-{role}"
    if len(name) <= max_length:
        return name
    keep = max_length - len(role) - 10
    return f"{owner[:keep].rstrip('-.')}-{short_hash(owner)}-{role}"


def label_value(name: str) -> str:
    """A label-safe form of an object name (label values are at most 63 characters)."""
    value = _LABEL_VALUE_INVALID.sub("-", name)
    if len(value) <= MAX_LABEL_VALUE:
        return value
    return f"{value[:MAX_LABEL_VALUE - 9].rstrip('-.')}-{short_hash(name)}"


def run_labels(run_name: str, component: str = COMPONENT_TRAINER) -> dict[str, str]:
    """Labels on every child of a CodexTrainingRun."""
    return {
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: OPERATOR_NAME,
        LABEL_PART_OF: OPERATOR_NAME,
        LABEL_TRAINING_RUN: label_value(run_name),
    }


def model_labels(model_name: str, component: str = COMPONENT_SERVER) -> dict[str, str]:
    """Labels on every child of a CodexModel."""
    return {
        LABEL_COMPONENT: component,
        LABEL_INSTANCE: label_value(model_name),
        LABEL_MANAGED_BY: OPERATOR_NAME,
        LABEL_PART_OF: OPERATOR_NAME,
        LABEL_MODEL: label_value(model_name),
    }


def model_selector(model_name: str) -> dict[str, str]:
    """The pod selector of a model's Deployment and Service (immutable on a Deployment: keep it small)."""
    return {LABEL_MODEL: label_value(model_name), LABEL_COMPONENT: COMPONENT_SERVER}


# Server-side label selector for the operator's watches on Jobs, Pods and Deployments.
MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={OPERATOR_NAME}"

# Children of a run, by role. The per-run ServiceAccount, Role and RoleBinding share one name.
spec_configmap_name = functools.partial(child_name, role=ROLE_SPEC)
checkpoint_pvc_name = functools.partial(child_name, role=ROLE_CHECKPOINTS)
trainer_account_name = functools.partial(child_name, role=ROLE_TRAINER)
job_name = functools.partial(child_name, role=ROLE_JOB)
workers_service_name = functools.partial(child_name, role=ROLE_WORKERS)
work_pvc_name = functools.partial(child_name, role=ROLE_WORK)


def stage_job_name(run_name: str, stage: str) -> str:
    """The Job of one stage: the training Job keeps its name, the others are ``<run>-<stage>``."""
    return job_name(run_name) if stage == stages.TRAIN else child_name(run_name, stage)
# Children of a model: the Deployment, Service and HPA of a CodexModel share one name.
server_name = functools.partial(child_name, role=ROLE_SERVER)


def owner_run_name(obj: Mapping[str, Any]) -> str | None:
    """The CodexTrainingRun a Job or pod belongs to, from the annotation its template carries."""
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_TRAINING_RUN)


def controller_owner(obj: Mapping[str, Any], kind: str) -> tuple[str, str] | None:
    """(name, uid) of the controlling owner of ``obj`` when it is a ``kind``."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == kind and ref.get("controller"):
            return ref.get("name"), ref.get("uid")
    return None
