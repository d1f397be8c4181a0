"""A child the apiserver refuses although its spec passed the models: the spec's fault, reported on
the run or model as InvalidSpec naming the spec field the refused value came from, and not retried
until the spec changes (a retry would build the same object and be refused the same way)."""

from __future__ import annotations

from typing import Any, NoReturn, Optional

from codex_api import SpecError

from .k8s import ApiError, Kube

# (where the apiserver's message points in the child, the spec field that value is built from), per
# owner kind, most specific first. A field not listed is reported against spec as a whole, with the
# apiserver's words.
POD_FIELDS = (
    ("spec.template.spec.nodeSelector", "spec.resources.nodeSelector"),
    ("spec.template.spec.tolerations", "spec.resources.tolerations"),
    ("spec.template.spec.containers[0].resources", "spec.resources"),
)
CHILD_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "CodexTrainingRun": POD_FIELDS + (
        ("spec.template.spec.containers[0].image", "spec.job.image"),
        ("spec.template.spec.imagePullSecrets", "spec.job.imagePullSecrets"),
        ("spec.template.spec.serviceAccountName", "spec.job.serviceAccountName"),
        ("spec.template.spec.runtimeClassName", "spec.evaluation.sandbox.runtimeClassName"),
        ("spec.activeDeadlineSeconds", "spec.job.activeDeadlineSeconds"),
        ("spec.ttlSecondsAfterFinished", "spec.job.ttlSecondsAfterFinished"),
        ("spec.resources.requests", "spec.checkpointing.size"),
        ("spec.storageClassName", "spec.checkpointing.storageClassName"),
        ("metadata.labels", "spec.job.queueName"),
    ),
    "CodexModel": POD_FIELDS + (
        ("spec.template.spec.containers[0].image", "spec.image"),
        ("spec.minReplicas", "spec.autoscaling.minReplicas"),
        ("spec.maxReplicas", "spec.autoscaling.maxReplicas"),
        ("spec.metrics", "spec.autoscaling.targetCPUUtilization"),
        ("spec.replicas", "spec.replicas"),
        ("spec.ports", "spec.service.port"),
        ("spec.type", "spec.service.type"),
    ),
}
# What the apiserver answers when an object fails its validation.
INVALID = 422


def refusal(error: ApiError, owner_kind: str) -> Optional[SpecError]:
    """The SpecError a refused child of an ``owner_kind`` amounts to, or None when the error is not a
    validation refusal."""
    if error.status != INVALID:
        return None
    message = " ".join(error.message.split())
    field = next((spec for child, spec in CHILD_FIELDS[owner_kind] if child in message), "spec")
    return SpecError([f"{field}: the apiserver refused an object built from this spec, so nothing more is "
                      f"created until the spec changes: {message}"])


class ChildRefused(Exception):
    """A child was refused (``error``) and what was made before it in the same pass was removed."""

    def __init__(self, error: SpecError):
        self.error = error
        super().__init__(str(error))


def half_made(made: list[tuple[dict[str, Any], bool]]) -> list[dict[str, Any]]:
    """Of the children a refused pass of a run found or created, (child, created), the ones to remove,
    newest first: all of them but a volume that was there before the pass (it may hold an earlier
    attempt's checkpoints or hand-off, which a fixed spec resumes from)."""
    return [child for child, created in reversed(made) if created or child["kind"] != "PersistentVolumeClaim"]


async def refuse(kube: Kube, error: ApiError, owner_kind: str, remove: list[dict[str, Any]]) -> NoReturn:
    """Raise :class:`ChildRefused` for a validation refusal, once the children ``remove`` are deleted
    (in that order); re-raise ``error`` when it is not one."""
    spec_error = refusal(error, owner_kind)
    if spec_error is None:
        raise error
    for child in remove:
        meta = child["metadata"]
        await kube.delete(child["apiVersion"], child["kind"], meta["namespace"], meta["name"])
    raise ChildRefused(spec_error) from error
