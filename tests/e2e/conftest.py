"""End-to-end tests: the operator runs in-cluster (a pod the node agent runs) with its own
ServiceAccount and least-privilege RBAC, against the embedded control plane, and the real
trainer and server do the work.

Each module installs the operator the way a user would and names the way in ``INSTALL``:
``"helm"`` (the chart, in a restricted namespace) or ``"kustomize"`` (the cluster-wide
overlay). The happy path therefore runs with a Helm-installed operator and the failure
paths with a kustomize-installed one; both prove the shipped RBAC is enough."""

from __future__ import annotations

from typing import Iterator

import pytest
from e2e_support import OperatorHandle
from installs import install_with_helm, install_with_kustomize

INSTALLERS = {"helm": install_with_helm, "kustomize": install_with_kustomize}


@pytest.fixture(scope="module")
def operator(cluster, request) -> Iterator[OperatorHandle]:
    install = INSTALLERS[getattr(request.module, "INSTALL", "helm")]
    handle = install(cluster)
    yield handle
    handle.uninstall()
    cluster.kubectl("wait", "--for=delete", "pod", "-l", "app.kubernetes.io/name=codex-operator",
                    "-n", handle.namespace, "--timeout=90s", check=False)
