"""The checkpoint PVC the operator creates when spec.checkpointing.size is set."""

from __future__ import annotations

from typing import Any, Optional

from codex_api import CodexTrainingRun

from .. import names
from .common import metadata


def build_checkpoint_pvc(run: CodexTrainingRun) -> Optional[dict[str, Any]]:
    """None unless the run asks for an operator-created checkpoint volume."""
    checkpointing = run.spec.checkpointing
    if not checkpointing.size:
        return None
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"] if run.spec.resources.nodes == 1 else ["ReadWriteMany"],
        "resources": {"requests": {"storage": checkpointing.size}},
    }
    if checkpointing.storage_class_name:
        spec["storageClassName"] = checkpointing.storage_class_name
    name = names.checkpoint_pvc_name(run.metadata.name)
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(name, run.metadata.namespace, names.run_labels(run.metadata.name)),
        "spec": spec,
    }


def checkpoint_claim_name(run: CodexTrainingRun) -> Optional[str]:
    """The PVC mounted at the checkpoint directory: the user's, the operator's, or None (emptyDir)."""
    if run.spec.checkpointing.claim_name:
        return run.spec.checkpointing.claim_name
    if run.spec.checkpointing.size:
        return names.checkpoint_pvc_name(run.metadata.name)
    return None
