"""The headless Service that gives multi-node trainer pods stable DNS names for torchrun."""

from __future__ import annotations

from typing import Any, Optional

from codex_api import CodexTrainingRun

from .. import names
from .common import metadata

RENDEZVOUS_PORT = 29500


def build_workers_service(run: CodexTrainingRun) -> Optional[dict[str, Any]]:
    """None for single-node runs; otherwise ``<job>-<index>.<service>`` resolves each pod."""
    if run.spec.resources.nodes <= 1:
        return None
    labels = names.run_labels(run.metadata.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(names.workers_service_name(run.metadata.name), run.metadata.namespace, labels),
        "spec": {
            "clusterIP": "None",
            # Rendezvous happens before any pod is Ready.
            "publishNotReadyAddresses": True,
            "selector": {names.LABEL_TRAINING_RUN: labels[names.LABEL_TRAINING_RUN],
                         names.LABEL_COMPONENT: names.COMPONENT_TRAINER},
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT,
                       "protocol": "TCP"}],
        },
    }
