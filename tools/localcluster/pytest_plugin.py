"""pytest fixtures: one embedded cluster per session, a fresh namespace per test.

Enable with ``pytest_plugins = ["localcluster.pytest_plugin"]`` in the top-level
conftest (or import the fixtures into a conftest). Environment knobs:

- ``LOCALCLUSTER_WORKDIR``: reuse the running cluster there (``python -m localcluster up``) instead of
  starting one; it is left running at the end.
- ``LOCALCLUSTER_KEEP=1``: keep the session cluster's files (logs!) after it is stopped.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from . import underlay
from .cluster import DEFAULT_CAPACITY, LocalCluster, NodeSpec
from .netplan import ClusterNetwork

# Two nodes that look like small GPU boxes: product pods asking for nvidia.com/gpu schedule here, and a
# multi-node run puts a pod on each (so pods talk across nodes, as on a real cluster).
TEST_NODES = [NodeSpec(
    name=name,
    labels={"codex.dev/test-node": "true", "nvidia.com/gpu.present": "true"},
    capacity={**DEFAULT_CAPACITY, "nvidia.com/gpu": "2"},
) for name in ("local-node", "local-node-2")]


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    existing = os.environ.get("LOCALCLUSTER_WORKDIR")
    if existing:
        attached = LocalCluster.attach(existing)
        if not attached.is_running():
            pytest.fail(f"LOCALCLUSTER_WORKDIR={existing}: no running cluster there")
        yield attached
        return
    # Not under pytest's basetemp: that is mode 0700, and pods running as non-root must reach their files.
    workdir = Path(tempfile.mkdtemp(prefix="codex-localcluster-test-"))
    workdir.chmod(0o755)
    started = LocalCluster(workdir, nodes=TEST_NODES)
    try:
        started.up()
        yield started
    finally:
        started.down()
        network = started.state.get("network")
        if network and network["mode"] == "real":  # `down` must leave nothing of the pod network behind
            left = underlay.leftovers(ClusterNetwork(**network).plan)
            assert not left, f"the session cluster left {left}"
        if os.environ.get("LOCALCLUSTER_KEEP") != "1":
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"\nlocalcluster files kept in {workdir}")


@pytest.fixture
def cluster_namespace(cluster: LocalCluster, request) -> Iterator[str]:
    """A namespace of its own for one test, named after it, deleted (without waiting) afterwards."""
    with cluster.temporary_namespace(request.node.name) as name:
        yield name
