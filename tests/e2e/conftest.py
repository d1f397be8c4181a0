"""End-to-end tests: the operator runs in-cluster (a pod the node agent runs) with its own
ServiceAccount and least-privilege RBAC, against the embedded control plane, and the real
trainer and server do the work."""

from __future__ import annotations

from typing import Iterator

import pytest
from e2e_support import OperatorHandle, install_operator


@pytest.fixture(scope="session")
def operator(cluster) -> Iterator[OperatorHandle]:
    handle = install_operator(cluster)
    yield handle
    handle.uninstall()
