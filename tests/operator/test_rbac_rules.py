"""The operator's and the trainer's RBAC: least privilege, and no Secrets anywhere."""

from __future__ import annotations

from op_examples import example

from codex_operator.builders.rbac import build_trainer_rbac, trainer_role_rules
from codex_operator.rbac_rules import build_operator_rbac, operator_rules

EXPECTED = {
    # The operator never writes what a user owns (Argo CD sees no drift): status only.
    ("codex.dev", "codextrainingruns"): {"list", "watch"},
    ("codex.dev", "codexmodels"): {"list", "watch"},
    ("codex.dev", "codextrainingruns/status"): {"patch"},
    ("codex.dev", "codexmodels/status"): {"patch"},
    ("batch", "jobs"): {"create", "get", "list", "watch", "patch", "delete"},
    ("", "pods"): {"list", "watch"},
    ("", "pods/log"): {"get"},
    ("networking.k8s.io", "networkpolicies"): {"create", "get"},
    ("", "configmaps"): {"create", "get", "patch"},
    ("", "persistentvolumeclaims"): {"create", "get"},
    ("", "serviceaccounts"): {"create", "get"},
    ("", "services"): {"create", "get", "list", "watch", "patch"},
    ("rbac.authorization.k8s.io", "roles"): {"create", "get"},
    ("rbac.authorization.k8s.io", "rolebindings"): {"create", "get"},
    ("apps", "deployments"): {"create", "get", "list", "watch", "patch"},
    ("autoscaling", "horizontalpodautoscalers"): {"create", "get", "list", "watch", "patch", "delete"},
    ("", "events"): {"create"},
}


def flatten(rules):
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def test_operator_rules_are_exactly_what_the_code_uses():
    assert flatten(operator_rules()) == EXPECTED
    assert flatten(operator_rules(peering=True))[("kopf.dev", "kopfpeerings")] == {"get", "list", "watch", "patch"}


def test_no_secrets_no_wildcards_no_escalation_verbs():
    for rule in operator_rules(peering=True):
        assert "secrets" not in rule["resources"]
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        # delete: HPAs come and go with spec.autoscaling; a sandbox Job whose results are gone runs again.
        assert not {"bind", "escalate", "impersonate", "delete"} & set(rule["verbs"]) or \
            rule["resources"] in (["horizontalpodautoscalers"], ["jobs"])


def test_trainer_may_patch_only_its_own_status():
    from codex_api import CodexTrainingRun, parse

    assert trainer_role_rules("codex-demo") == [{"apiGroups": ["codex.dev"], "resources": ["codextrainingruns/status"],
                                                 "resourceNames": ["codex-demo"], "verbs": ["patch"]}]
    account, role, binding = build_trainer_rbac(parse(CodexTrainingRun, example("run.yaml", "CodexTrainingRun")))
    assert account["automountServiceAccountToken"] is False
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "codex-demo-trainer", "namespace": "team-a"}]
    # The operator can only grant what it holds (RBAC escalation check): it holds this.
    assert flatten(role["rules"]).items() <= flatten(operator_rules()).items()


def test_cluster_wide_and_namespaced_install():
    clusterwide = build_operator_rbac("codex-operator", "codex-system", peering=True)
    assert [o["kind"] for o in clusterwide] == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"]
    assert ("kopf.dev", "clusterkopfpeerings") in flatten(clusterwide[1]["rules"])
    namespaced = build_operator_rbac("codex-operator", "codex-system", ["b", "a"])
    assert [(o["kind"], o["metadata"].get("namespace")) for o in namespaced] == [
        ("ServiceAccount", "codex-system"), ("Role", "a"), ("RoleBinding", "a"), ("Role", "b"), ("RoleBinding", "b")]
