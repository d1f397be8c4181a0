"""A child the apiserver refuses although its spec passed the models: the spec's fault, reported on
the run as InvalidSpec naming the spec field the refused value came from, and not retried until the
spec changes (a retry would build the same object and be refused the same way)."""

from __future__ import annotations

from typing import Optional

from codex_api import SpecError

from .k8s import ApiError

# (where the apiserver's message points in the child, the spec field that value is built from), most
# specific first. A field not listed is reported against spec as a whole, with the apiserver's words.
CHILD_FIELDS = (
    ("spec.template.spec.nodeSelector", "spec.resources.nodeSelector"),
    ("spec.template.spec.tolerations", "spec.resources.tolerations"),
    ("spec.template.spec.containers[0].resources", "spec.resources"),
    ("spec.template.spec.containers[0].image", "spec.job.image"),
    ("spec.template.spec.imagePullSecrets", "spec.job.imagePullSecrets"),
    ("spec.template.spec.serviceAccountName", "spec.job.serviceAccountName"),
    ("spec.template.spec.runtimeClassName", "spec.evaluation.sandbox.runtimeClassName"),
    ("spec.activeDeadlineSeconds", "spec.job.activeDeadlineSeconds"),
    ("spec.ttlSecondsAfterFinished", "spec.job.ttlSecondsAfterFinished"),
    ("spec.resources.requests", "spec.checkpointing.size"),
    ("spec.storageClassName", "spec.checkpointing.storageClassName"),
    ("metadata.labels", "spec.job.queueName"),
)
# What the apiserver answers when an object fails its validation.
INVALID = 422


def refusal(error: ApiError) -> Optional[SpecError]:
    """The SpecError a refused child amounts to, or None when the error is not a validation refusal."""
    if error.status != INVALID:
        return None
    message = " ".join(error.message.split())
    field = next((spec for child, spec in CHILD_FIELDS if child in message), "spec")
    return SpecError([f"{field}: the apiserver refused an object built from this spec, so nothing more is "
                      f"created until the spec changes: {message}"])
