"""The per-run identity of the trainer: a ServiceAccount that may patch only its own run's status.

The trainer reports status.progress with a merge patch on the status subresource; this Role
is the least privilege that allows it (one verb, one subresource, one resourceName).
"""

from __future__ import annotations

from typing import Any

from codex_api import API_GROUP, CodexTrainingRun
from codex_api.training_run import PLURAL

from .. import names
from .common import metadata


def uses_own_account(run: CodexTrainingRun) -> bool:
    """True when the trainer runs as the per-run ServiceAccount (spec.job.serviceAccountName unset)."""
    return run.spec.job.service_account_name is None


def trainer_role_rules(run_name: str) -> list[dict[str, Any]]:
    return [{
        "apiGroups": [API_GROUP],
        "resources": [f"{PLURAL}/status"],
        "resourceNames": [run_name],
        "verbs": ["patch"],
    }]


def build_trainer_rbac(run: CodexTrainingRun) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding for the trainer, or [] when the user names an account."""
    if not uses_own_account(run):
        return []
    name = names.trainer_account_name(run.metadata.name)
    namespace = run.metadata.namespace
    meta = metadata(name, namespace, names.run_labels(run.metadata.name))
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": meta,
            # The token is mounted only into the trainer pod, which asks for it explicitly.
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": trainer_role_rules(run.metadata.name),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]
