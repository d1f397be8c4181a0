"""End-to-end tests: the operator runs in-cluster (a pod the node agent runs) with its own
ServiceAccount and least-privilege RBAC, against the embedded control plane, and the real
trainer and server do the work.

Each module installs the operator the way a user would and names the way in ``INSTALL``:
``"helm"`` (the chart, in a restricted namespace) or ``"kustomize"`` (the cluster-wide
overlay). The happy path therefore runs with a Helm-installed operator and the failure
paths with a kustomize-installed one; both prove the shipped RBAC is enough.

Each test gets a fresh ``namespace`` named after it, holding the module's
``NAMESPACE_OBJECTS`` (a list of manifests, none by default). A module whose tests build on one
another sets ``NAMESPACE_SCOPE = "module"`` and its tests share one namespace, named after the
module."""

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


def _fresh_namespace(cluster, request) -> Iterator[str]:
    """A namespace named after ``request``'s test or module, with the module's ``NAMESPACE_OBJECTS``
    applied; deleted (without waiting) afterwards."""
    with cluster.temporary_namespace(request.node.name) as name:
        objects = getattr(request.module, "NAMESPACE_OBJECTS", [])
        if objects:
            cluster.apply(*objects, namespace=name)
        yield name


@pytest.fixture(scope="module")
def module_namespace(cluster, operator, request) -> Iterator[str]:
    """One namespace for the whole module (what ``namespace`` gives under ``NAMESPACE_SCOPE = "module"``)."""
    yield from _fresh_namespace(cluster, request)


@pytest.fixture
def namespace(cluster, operator, request) -> Iterator[str]:
    """The test's namespace, once the operator runs: its own, or the module's (see the module docstring)."""
    if getattr(request.module, "NAMESPACE_SCOPE", "function") == "module":
        yield request.getfixturevalue("module_namespace")
    else:
        yield from _fresh_namespace(cluster, request)
