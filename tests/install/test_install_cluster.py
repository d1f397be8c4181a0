"""The chart and the overlays against the embedded control plane: server-side dry runs of
both modes, and the Helm lifecycle (install in a restricted namespace, upgrade rolls the
operator, uninstall leaves nothing). The happy-path flow with a Helm- and a
kustomize-installed operator runs in tests/e2e (see its conftest)."""

from __future__ import annotations

import time

import pytest
import yaml

from .tools import CHART, REPO_ROOT, helm_template, run

pytestmark = pytest.mark.cluster

LOCAL_IMAGES = ["--set", "image.repository=codex-operator", "--set", "image.tag=dev",
                "--set", "trainer.image=codex-trainer:dev", "--set", "runtimes.builtin.image=codex-trainer:dev"]


def _apply_crds(cluster):
    for crd in sorted((REPO_ROOT / "crds").glob("*.yaml")):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))


@pytest.mark.parametrize("values", [None, "values-namespaced.yaml"], ids=["default", "namespaced"])
def test_rendered_chart_passes_server_side_dry_run(cluster, values):
    _apply_crds(cluster)
    for namespace in ("codex-system", "ml-team-a", "ml-team-b"):
        cluster.kubectl("create", "namespace", namespace, check=False)
    extra = ["-f", str(CHART / values)] if values else []
    manifests = helm_template("--include-crds", *extra)
    result = run("kubectl", "apply", "--dry-run=server", "-f", "-", input=manifests, kubeconfig=cluster.kubeconfig)
    created = [line for line in result.stdout.splitlines() if "(server dry run)" in line]
    assert len(created) == len([d for d in yaml.safe_load_all(manifests) if d])


@pytest.mark.parametrize("overlay", ["cluster-wide", "namespaced"])
def test_kustomize_overlays_pass_server_side_dry_run(cluster, overlay):
    _apply_crds(cluster)
    for namespace in ("codex-system", "codex-workloads"):
        cluster.kubectl("create", "namespace", namespace, check=False)
    result = run("kubectl", "apply", "--dry-run=server", "-k", f"manifests/overlays/{overlay}",
                 kubeconfig=cluster.kubeconfig)
    assert "deployment.apps/codex-operator created (server dry run)" in result.stdout


def _pods(cluster, namespace):
    return [p for p in cluster.get_json("pods", "-n", namespace,
                                        "-l", "app.kubernetes.io/instance=codex-lifecycle")["items"]
            if not p["metadata"].get("deletionTimestamp")]


def _ready_pod(cluster, namespace):
    pods = [p for p in _pods(cluster, namespace)
            if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])]
    return pods[0] if len(pods) == 1 else None


def test_helm_install_upgrade_uninstall_in_a_restricted_namespace(cluster):
    """Namespaced mode, so it never competes with the cluster-wide operator of other tests."""
    namespace, watched = "codex-lifecycle", "codex-lifecycle-work"
    cluster.create_namespace(namespace, labels={"pod-security.kubernetes.io/enforce": "restricted"})
    cluster.create_namespace(watched)
    release = ["codex-lifecycle", str(CHART), "--namespace", namespace, *LOCAL_IMAGES,
               "--set", "watch.mode=namespaces", "--set", f"watch.namespaces={{{watched}}}"]
    helm = lambda *args: run("helm", *args, kubeconfig=cluster.kubeconfig)  # noqa: E731

    helm("install", *release, "--wait", "--timeout", "180s")
    first = _ready_pod(cluster, namespace)
    assert first, _pods(cluster, namespace)
    spec = first["spec"]
    assert spec["serviceAccountName"] == "codex-lifecycle-codex-operator"
    assert spec["securityContext"]["runAsNonRoot"] is True
    role = cluster.get_json("role", "codex-lifecycle-codex-operator", "-n", watched)
    assert role["rules"][0]["resources"] == ["codextrainingruns", "codexmodels"]
    def operator_can(verb: str, resource: str) -> str:
        """``kubectl auth can-i`` in ``watched`` as the operator's ServiceAccount: "yes" or "no"."""
        return run("kubectl", "auth", "can-i", verb, resource, "-n", watched,
                   f"--as=system:serviceaccount:{namespace}:codex-lifecycle-codex-operator",
                   kubeconfig=cluster.kubeconfig, check=False).stdout.strip()

    assert operator_can("create", "jobs") == "yes"
    assert operator_can("get", "secrets") == "no"
    assert operator_can("patch", "codextrainingruns") == "no"  # status only: a user's spec is never written

    helm("upgrade", *release, "--set", "logFormat=plain", "--wait", "--timeout", "180s")
    second = _ready_pod(cluster, namespace)
    assert second and second["metadata"]["name"] != first["metadata"]["name"]
    assert "--log-format=plain" in second["spec"]["containers"][0]["args"]

    helm("uninstall", "codex-lifecycle", "--namespace", namespace, "--wait", "--timeout", "120s")
    selector = "app.kubernetes.io/instance=codex-lifecycle"

    def leftovers():
        left = cluster.get_json("deployments,services,serviceaccounts,networkpolicies,poddisruptionbudgets,pods",
                                "-n", namespace, "-l", selector)["items"]
        left += cluster.get_json("roles,rolebindings", "-n", watched, "-l", selector)["items"]
        return [(o["kind"], o["metadata"]["name"]) for o in left]

    # The operator pod gets its grace period (SIGTERM first) before garbage collection removes it.
    deadline = time.monotonic() + 90
    while leftovers() and time.monotonic() < deadline:
        time.sleep(1)
    assert leftovers() == []
