"""The operator's own least-privilege RBAC, as data.

The Helm chart and the kustomize manifests are generated from (and tested against) these
rules. Each rule lists only the verbs some code path uses; the comment says which.
Secrets are absent on purpose: Jobs and Deployments reference them with secretKeyRef,
so the operator never reads a credential.
"""

from __future__ import annotations

from typing import Any

from codex_api import API_GROUP

Rule = dict[str, Any]


def operator_rules(peering: bool = False) -> list[Rule]:
    """PolicyRules the operator needs in every namespace it watches."""
    rules: list[Rule] = [
        # Both kinds are watched; the operator never writes a user's spec, metadata or annotations.
        {"apiGroups": [API_GROUP], "resources": ["codextrainingruns", "codexmodels"],
         "verbs": ["list", "watch"]},
        # Status is computed and written by the operator. Holding patch on codextrainingruns/status
        # is also what lets it grant the same (for one run) to each run's trainer Role.
        {"apiGroups": [API_GROUP], "resources": ["codextrainingruns/status", "codexmodels/status"],
         "verbs": ["patch"]},
        # A run's Jobs (train, sandbox, publish): created once, found again after a 409, suspend/deadline/TTL
        # patched; a finished sandbox Job whose pod (and so its results) is gone is deleted to run again.
        {"apiGroups": ["batch"], "resources": ["jobs"],
         "verbs": ["create", "get", "list", "watch", "patch", "delete"]},
        # Trainer pods are only watched, for their state and termination message.
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
        # The sandbox pod's newest log line says how many programs it has run (it holds no credential
        # to write status itself).
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        # The deny-all NetworkPolicy around each run's sandbox pods.
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["create", "get"]},
        # The rendered spec (re-rendered on spec changes).
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "get", "patch"]},
        # Checkpoint and work volumes and the trainer's ServiceAccount are created once.
        {"apiGroups": [""], "resources": ["persistentvolumeclaims", "serviceaccounts"], "verbs": ["create", "get"]},
        # Headless Services of multi-node runs; model Services are watched and kept as specified.
        {"apiGroups": [""], "resources": ["services"], "verbs": ["create", "get", "list", "watch", "patch"]},
        # The per-run Role and RoleBinding (patch on the run's own status only).
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"],
         "verbs": ["create", "get"]},
        # Serving Deployments roll to new adapters by patch.
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["create", "get", "list", "watch", "patch"]},
        # HPAs come and go with spec.autoscaling.
        {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"],
         "verbs": ["create", "get", "list", "watch", "patch", "delete"]},
        # One Event per phase transition.
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ]
    if peering:
        # HA: replicas announce themselves in the peering object's status.
        rules.append({"apiGroups": ["kopf.dev"], "resources": ["kopfpeerings"],
                      "verbs": ["get", "list", "watch", "patch"]})
    return rules


def cluster_peering_rules() -> list[Rule]:
    """Cluster-wide HA mode uses a cluster-scoped ClusterKopfPeering."""
    return [{"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"],
             "verbs": ["get", "list", "watch", "patch"]}]


def build_operator_rbac(service_account: str, namespace: str, watch_namespaces: list[str] | None = None,
                        peering: bool = False, name: str = "codex-operator") -> list[dict[str, Any]]:
    """ServiceAccount plus a ClusterRole/Binding (cluster-wide), or a Role/Binding per watched namespace."""
    subject = {"kind": "ServiceAccount", "name": service_account, "namespace": namespace}
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "codex-operator"}
    objects: list[dict[str, Any]] = [{
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": service_account, "namespace": namespace, "labels": labels},
    }]
    if not watch_namespaces:
        rules = operator_rules(peering=False) + (cluster_peering_rules() if peering else [])
        objects += [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": name, "labels": labels}, "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": name, "labels": labels},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
             "subjects": [subject]},
        ]
        return objects
    for watched in sorted(set(watch_namespaces)):
        objects += [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": name, "namespace": watched, "labels": labels}, "rules": operator_rules(peering)},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": name, "namespace": watched, "labels": labels},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
             "subjects": [subject]},
        ]
    return objects
