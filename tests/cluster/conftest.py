"""Cluster tests share one embedded control plane per session (tools/localcluster/pytest_plugin.py).

pytest refuses ``pytest_plugins`` outside the top-level conftest, so the
fixtures are imported here; once tests/conftest.py lists
``localcluster.pytest_plugin`` these imports are harmless duplicates.
"""

from localcluster.pytest_plugin import cluster, cluster_namespace  # noqa: F401
