"""Install the operator the ways users do — the Helm chart, or the kustomize overlay — on the
embedded cluster, in a namespace that enforces the `restricted` Pod Security Standard.

The node agent runs the operator pod with the chart's (or overlay's) own ServiceAccount and
RBAC, so every e2e flow also proves that the shipped RBAC is enough and the pods comply.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml
from e2e_support import OPERATOR_NAMESPACE, REPO_ROOT, TRAINER_IMAGE, OperatorHandle, wait

from localcluster import build

RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}
CHART = REPO_ROOT / "helm" / "codex-operator"
# The chart's image values pointed at images the node agent runs (codex-operator*, codex-trainer*).
HELM_LOCAL_IMAGES = {
    "image.repository": "codex-operator", "image.tag": "dev",
    "trainer.image": TRAINER_IMAGE, "runtimes.builtin.image": TRAINER_IMAGE,
}


def _crds(cluster) -> None:
    for crd in sorted((REPO_ROOT / "crds").glob("*.yaml")):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    for crd in ("codextrainingruns.codex.dev", "codexmodels.codex.dev"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")


def _helm(cluster, *args: str) -> str:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    result = subprocess.run([str(build.binary("helm")), *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)}: {result.stderr}")
    return result.stdout


class HelmRelease(OperatorHandle):
    def uninstall(self) -> None:
        _helm(self.cluster, "uninstall", "codex-operator", "--namespace", self.namespace, "--wait", "--timeout", "120s")


class KustomizeInstall(OperatorHandle):
    overlay: Path = REPO_ROOT / "manifests" / "overlays" / "cluster-wide"

    def uninstall(self) -> None:
        # The CRDs stay (other tests' objects use them), as `helm uninstall` leaves them too.
        rendered = self.cluster.kubectl("kustomize", str(self.overlay)).stdout
        docs = [d for d in yaml.safe_load_all(rendered)
                if d and d["kind"] not in ("CustomResourceDefinition", "Namespace")]
        self.cluster.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-",
                             input="---\n".join(yaml.safe_dump(d) for d in docs))


def _ready(handle: OperatorHandle) -> OperatorHandle:
    handle.cluster.kubectl("rollout", "status", "deployment/codex-operator", "-n", handle.namespace,
                           "--timeout=180s")
    wait("the operator to log that it is configured", lambda: "codex-operator configured" in handle.logs(), 90)
    return handle


def install_with_helm(cluster) -> HelmRelease:
    """`helm install` into a restricted namespace, cluster-wide mode, the chart's own SA and RBAC."""
    _crds(cluster)
    cluster.create_namespace(OPERATOR_NAMESPACE, labels=RESTRICTED)
    sets = [arg for key, value in HELM_LOCAL_IMAGES.items() for arg in ("--set", f"{key}={value}")]
    _helm(cluster, "install", "codex-operator", str(CHART), "--namespace", OPERATOR_NAMESPACE, *sets,
          "--set-string", "trainer.resources.cpu=1", "--set-string", "trainer.resources.memory=2Gi",
          "--wait", "--timeout", "180s")
    return _ready(HelmRelease(cluster))


def install_with_kustomize(cluster) -> KustomizeInstall:
    """`kubectl apply -k manifests/overlays/cluster-wide`, exactly as shipped (its images are
    ghcr.io/.../codex-operator and codex-trainer, which the node agent runs by name)."""
    _crds(cluster)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(KustomizeInstall.overlay))
    return _ready(KustomizeInstall(cluster))
